"""The VIP as the kernel sees it (not as keepalived believes): present on its interface or not."""

from __future__ import annotations

import ipaddress
import json

from esc.addresses import IPAddress
from esc.drivers.proc import run
from esc.errors import CommandError


class VipDriver:
    """Implements :class:`esc.drivers.base.Vip` with ``ip -j addr``."""

    def __init__(self, address: IPAddress, iface: str) -> None:
        self.address = address
        self.iface = iface

    def _entries(self) -> list[tuple[str, int]]:
        try:
            out = run(["ip", "-j", "addr", "show", "dev", self.iface], timeout=5).stdout
        except CommandError:
            return []
        found = []
        for link in json.loads(out or "[]"):
            for a in link.get("addr_info", []):
                if ipaddress.ip_address(a["local"]) == self.address:
                    found.append((a["local"], int(a["prefixlen"])))
        return found

    def is_held(self) -> bool:
        return bool(self._entries())

    def remove(self) -> None:
        # A killed keepalived leaves the VIP on the interface: remove it ourselves.
        for local, plen in self._entries():
            run(["ip", "addr", "del", f"{local}/{plen}", "dev", self.iface], check=False)
