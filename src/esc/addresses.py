"""Address rules shared by the config, escadm and the lab.

The project only ever configures addresses from the documentation ranges (RFC 5737, RFC 3849)
and loopback, so a typo can never point the pair at somebody else's network.
"""

from __future__ import annotations

import ipaddress
import re

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface

ALLOWED_NETWORKS: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = (
    ipaddress.ip_network("192.0.2.0/24"),
    ipaddress.ip_network("198.51.100.0/24"),
    ipaddress.ip_network("203.0.113.0/24"),
    ipaddress.ip_network("2001:db8::/32"),
)

# Linux interface names: 1-15 chars, no '/', ':', whitespace or control characters.
_IFNAME = re.compile(r"^[A-Za-z0-9_.\-@]{1,15}$")


def is_allowed(addr: IPAddress) -> bool:
    """True when ``addr`` lies in a documentation range."""
    return any(addr.version == net.version and addr in net for net in ALLOWED_NETWORKS)


def parse_ip(text: str) -> IPAddress:
    """Parse an address, refusing anything outside the documentation ranges."""
    try:
        addr = ipaddress.ip_address(text.strip("[]"))
    except ValueError as exc:
        raise ValueError(f"{text!r} is not an IP address") from exc
    if not is_allowed(addr):
        raise ValueError(
            f"{addr} is outside the allowed ranges "
            "(192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32)"
        )
    return addr


def parse_interface(text: str) -> IPInterface:
    """Parse ``addr/len`` (a missing length means a host route), in allowed ranges only."""
    try:
        iface = ipaddress.ip_interface(text.strip("[]"))
    except ValueError as exc:
        raise ValueError(f"{text!r} is not an address with prefix length") from exc
    if not is_allowed(iface.ip):
        parse_ip(str(iface.ip))  # raises with the standard message
    return iface


def check_ifname(name: str) -> str:
    """Validate a Linux interface name (it ends up in generated config)."""
    if not _IFNAME.match(name):
        raise ValueError(f"{name!r} is not a valid interface name")
    return name
