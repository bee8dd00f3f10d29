"""Address rules shared by the config, escadm and the lab.

The product accepts any unicast address an operator owns: private (10/8, 172.16/12,
192.168/16, fc00::/7), global, or anything else a host can hold. It refuses only what can never
work where the address is used (:func:`check_address` with a :class:`Use`, one per kind of
setting in ``esc.config.schema``):

- everywhere: multicast, the IPv4 broadcast address, IPv4-mapped IPv6 (write the IPv4 address),
  a zone (``fe80::1%eth0``), and the unspecified address except as a listening address;
- per use: loopback (another host can never reach 127/8 or ``::1``) and link-local. An IPv6
  link-local address is usable only together with an interface, so it is refused wherever the
  setting has no interface to go with it. IPv4 link-local (169.254/16) needs no interface and
  works on one link, so it is accepted where one link is all the address needs (node addresses,
  BGP peers, gateways), and refused where it must be reached from other networks (VIP,
  anycast): routers never forward it.

The documentation ranges (:data:`ALLOWED_NETWORKS`, RFC 5737 and RFC 3849) are a different
rule: they are the only addresses the lab and the tests use, so that their traffic can never
reach somebody else's network. The lab enforces it (``esclab.topology`` checks its layout, the
lab VIM's settings its VM subnet); the product never applies it to an operator's config.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface

# The lab's and the tests' traffic rule (module docstring), not the product's.
ALLOWED_NETWORKS: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = (
    ipaddress.ip_network("192.0.2.0/24"),
    ipaddress.ip_network("198.51.100.0/24"),
    ipaddress.ip_network("203.0.113.0/24"),
    ipaddress.ip_network("2001:db8::/32"),
)
_BROADCAST = ipaddress.IPv4Address("255.255.255.255")

# Linux interface names: 1-15 chars, no '/', ':', whitespace or control characters.
_IFNAME = re.compile(r"^[A-Za-z0-9_.\-@]{1,15}$")


def is_allowed(addr: IPAddress) -> bool:
    """True when ``addr`` lies in a documentation range: the lab's and the tests' rule only."""
    return any(addr.version == net.version and addr in net for net in ALLOWED_NETWORKS)


@dataclass(frozen=True)
class Use:
    """Where an address is used. Each field is the reason an address of that kind cannot work
    there, or None where it is accepted."""

    loopback: str | None
    link_local_v4: str | None
    link_local_v6: str | None
    unspecified: str | None = "it names no host"


def url_host(addr: IPAddress | str) -> str:
    """The address as the host part of a URL: IPv6 in brackets."""
    text = str(addr)
    return f"[{text}]" if ":" in text else text


def parse_ip(text: str) -> IPAddress:
    """Parse an address (``[...]`` allowed around IPv6). Syntax only: :func:`check_address`
    decides whether it can work where it is used."""
    if "%" in text:
        raise ValueError(f"{text!r}: a zone (%IFACE) is not supported here")
    try:
        return ipaddress.ip_address(text.strip("[]"))
    except ValueError as exc:
        raise ValueError(f"{text!r} is not an IP address") from exc


def check_address(addr: IPAddress, use: Use) -> IPAddress:
    """``addr`` unchanged, or ValueError saying why it can never work for ``use``."""
    reason: str | None = None
    if addr.is_multicast:
        reason = "is a multicast address: only a unicast address names one host"
    elif addr == _BROADCAST:
        reason = "is the broadcast address: only a unicast address names one host"
    elif isinstance(addr, ipaddress.IPv6Address) and addr.scope_id:
        reason = "carries a zone (%IFACE), which is not supported here"
    elif isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        reason = f"is an IPv4-mapped IPv6 address: write {addr.ipv4_mapped}"
    elif addr.is_unspecified:
        reason = use.unspecified and f"is the unspecified address: {use.unspecified}"
    elif addr.is_loopback:
        reason = use.loopback and f"is a loopback address: {use.loopback}"
    elif addr.is_link_local and addr.version == 4:
        reason = use.link_local_v4 and f"is link-local (169.254.0.0/16): {use.link_local_v4}"
    elif addr.is_link_local:
        reason = use.link_local_v6 and f"is link-local (fe80::/10): {use.link_local_v6}"
    if reason:
        raise ValueError(f"{addr} {reason}")
    return addr


def subnet_own(addr: IPAddress, net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> str | None:
    """``"network"`` or ``"broadcast"`` when ``addr`` is one of an IPv4 subnet's own first and
    last addresses (Linux treats both as broadcast up to /30; /31 and /32 have none), else
    None. No host can hold those."""
    if addr.version != 4 or net.version != 4 or net.prefixlen > 30:
        return None
    if addr == net.network_address:
        return "network"
    return "broadcast" if addr == net.broadcast_address else None


def check_ifname(name: str) -> str:
    """Validate a Linux interface name (it ends up in generated config)."""
    if not _IFNAME.match(name):
        raise ValueError(f"{name!r} is not a valid interface name")
    return name
