"""Where a ``Callback`` may point, checked when the request arrives, and the pinned address the
worker then delivers to.

A callback makes the controller send a request to a URL its client chose: without a check that
is a request forgery from inside the pair's network (its loopback services, the cloud's
metadata endpoint). So, at request time, before anything is stored:

- a literal IP in the URL is checked directly;
- a name is resolved once (the :data:`Resolver` seam) and EVERY address it resolves to must be
  allowed; the first allowed one is pinned and stored with the callback;
- the worker connects to that pinned address only (no second lookup, so no DNS rebinding),
  with the ``Host`` header and the TLS server name (SNI and certificate check) still the name.

Refused always: the cloud metadata addresses. Refused unless ``manager.callback_networks``
lists a network inside the class: loopback, link-local, unspecified, multicast, broadcast and
the other reserved ranges. With ``callback_networks`` set, only addresses inside one of them
are allowed at all. A refusal is a ``ValueError`` starting ``Callback:`` (422 naming it).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from esc.manager.models import check_callback_url

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
RESOLVE_TIMEOUT_S = 2.0  # a name that takes longer is refused (the request waits for it)
# (host, port) → every address the name resolves to
Resolver = Callable[[str, int], Awaitable[Sequence[IPAddress]]]

METADATA = (ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254"))
# (network, what it is): refused unless a configured callback network lies inside it
REFUSED: tuple[tuple[IPNetwork, str], ...] = tuple(
    (ipaddress.ip_network(net), label)
    for net, label in (
        ("0.0.0.0/8", "unspecified"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local"),
        ("224.0.0.0/4", "multicast"),
        ("240.0.0.0/4", "reserved"),  # and 255.255.255.255, the broadcast address
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        ("fe80::/10", "link-local"),
        ("ff00::/8", "multicast"),
    )
)


class CallbackRefused(ValueError):
    """The Callback header names a target this node does not call."""


def _plain(addr: IPAddress) -> IPAddress:
    """An IPv4-mapped IPv6 address (::ffff:127.0.0.1) is the IPv4 address it carries."""
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


@dataclass(frozen=True)
class CallbackPolicy:
    """``manager.callback_networks``: empty, any address outside the refused classes."""

    networks: tuple[IPNetwork, ...] = ()

    def refusal(self, address: IPAddress) -> str | None:
        """Why ``address`` may not be called, or None when it may."""
        addr = _plain(address)
        if addr in METADATA:
            return f"{addr} is a cloud metadata address"
        listed = [n for n in self.networks if n.version == addr.version and addr in n]
        if self.networks and not listed:
            nets = ", ".join(str(n) for n in self.networks)
            return f"{addr} is not in manager.callback_networks ({nets})"
        for net, label in REFUSED:
            # let in only by a listed network inside this class (127.0.0.0/8), never by a
            # wide one around it (0.0.0.0/0)
            inside = net.version == addr.version and addr in net
            if inside and not any(n.subnet_of(net) for n in listed):  # type: ignore[arg-type]
                return f"{addr} is a {label} address"
        return None

    def check(self, address: IPAddress) -> None:
        why = self.refusal(address)
        if why is not None:
            raise CallbackRefused(f"Callback: refused: {why}")


@dataclass(frozen=True)
class PinnedCallback:
    """A checked callback: its URL as given and the address the worker connects to."""

    url: str
    address: str

    def request(self) -> tuple[str, dict[str, str], dict[str, object]]:
        """(URL to the pinned address, headers, httpx extensions): the connection goes to the
        address; ``Host`` and, for https, the TLS server name stay the URL's name."""
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        ip = ipaddress.ip_address(self.address)
        ip_host = f"[{ip}]" if ip.version == 6 else str(ip)
        netloc = f"{ip_host}:{parts.port}" if parts.port is not None else ip_host
        target = urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))
        shown = f"[{host}]" if ":" in host else host
        headers = {"Host": f"{shown}:{parts.port}" if parts.port is not None else shown}
        extensions: dict[str, object] = {}
        if parts.scheme == "https" and not _is_ip(host):
            extensions["sni_hostname"] = host
        return target, headers, extensions


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


async def system_resolver(host: str, port: int) -> list[IPAddress]:
    """The host's resolver (getaddrinfo), every address of the name."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [ipaddress.ip_address(info[4][0]) for info in infos]


@dataclass(frozen=True)
class CallbackGuard:
    """The policy and the resolver: what the API checks a ``Callback`` with."""

    policy: CallbackPolicy = CallbackPolicy()
    resolver: Resolver = system_resolver
    resolve_timeout_s: float = RESOLVE_TIMEOUT_S

    async def pin(self, url: str) -> PinnedCallback:
        """The checked, pinned callback; :class:`CallbackRefused` (``Callback: ...``) if the
        URL is malformed, does not resolve, or any address it names is refused."""
        try:
            check_callback_url(url)
        except ValueError as exc:
            raise CallbackRefused(str(exc)) from None
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        if _is_ip(host):
            addresses: Sequence[IPAddress] = [ipaddress.ip_address(host)]
        else:
            try:
                async with asyncio.timeout(self.resolve_timeout_s):
                    addresses = await self.resolver(host, port)
            except TimeoutError:
                raise CallbackRefused(
                    f"Callback: {host!r} did not resolve within {self.resolve_timeout_s:g} s"
                ) from None
            except (OSError, UnicodeError) as exc:
                raise CallbackRefused(f"Callback: {host!r} does not resolve ({exc})") from None
            if not addresses:
                raise CallbackRefused(f"Callback: {host!r} resolves to no address")
        for addr in addresses:
            self.policy.check(addr)
        return PinnedCallback(url, str(_plain(addresses[0])))
