"""What this host has: its interfaces and addresses, its name. One seam (``HostFacts``) with a
real implementation (``ip -j addr``) and a fake, used by escadm and the agent."""

from __future__ import annotations

import ipaddress
import json
import socket
from dataclasses import dataclass, field
from typing import Protocol

from esc.addresses import IPInterface
from esc.drivers.proc import run
from esc.errors import CommandError


class HostFacts(Protocol):
    """What escadm needs to know about this host."""

    def addresses(self) -> dict[str, list[IPInterface]]:
        """Interface name -> the addresses configured on it (an interface with none: [])."""

    def hostname(self) -> str: ...


class SystemHostFacts:
    """The real host, read with ``ip -j addr show``."""

    def addresses(self) -> dict[str, list[IPInterface]]:
        argv = ["ip", "-j", "addr", "show"]
        proc = run(argv, timeout=10)
        try:
            return parse_ip_json(proc.stdout)
        except (ValueError, AttributeError, TypeError) as exc:
            raise CommandError(argv, 0, f"unreadable output: {exc}") from exc

    def hostname(self) -> str:
        return socket.gethostname()


def parse_ip_json(text: str) -> dict[str, list[IPInterface]]:
    """Parse ``ip -j addr show`` output (any address, not only documentation ranges)."""
    result: dict[str, list[IPInterface]] = {}
    for link in json.loads(text or "[]"):
        name = link.get("ifname")
        if not isinstance(name, str):
            continue
        addrs = result.setdefault(name, [])
        for info in link.get("addr_info", []):
            if info.get("family") not in ("inet", "inet6"):
                continue
            try:
                addrs.append(ipaddress.ip_interface(f"{info['local']}/{info['prefixlen']}"))
            except (KeyError, ValueError):
                continue
    return result


@dataclass
class FakeHostFacts:
    """A host for tests: ``FakeHostFacts({"eth0": [ip_interface("192.0.2.10/24")]}, "ha0")``."""

    ifaces: dict[str, list[IPInterface]] = field(default_factory=dict)
    name: str = "esc"

    def addresses(self) -> dict[str, list[IPInterface]]:
        return {k: list(v) for k, v in self.ifaces.items()}

    def hostname(self) -> str:
        return self.name
