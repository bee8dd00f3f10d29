"""What ``escadm ha set`` / ``bgp set`` check against this host, beyond the schema's value rules:
the interfaces exist, this host owns one node address, the VIP is a free address of a subnet
of its interface. Facts come from :class:`esc.host.HostFacts`; errors name the schema field
(``ha.kad_vif``), which escadm turns into the flag like any schema error.
"""

from __future__ import annotations

from collections.abc import Mapping

from esc.addresses import IPAddress, IPInterface, subnet_own
from esc.config.schema import BgpConfig, HaConfig
from esc.errors import ConfigError

Addresses = Mapping[str, list[IPInterface]]


def owners(addrs: Addresses, addr: IPAddress) -> list[str]:
    """The interfaces holding ``addr``."""
    return [name for name, ifs in addrs.items() if any(i.ip == addr for i in ifs)]


def check_ha_host(ha: HaConfig, addrs: Addresses) -> IPAddress:
    """Host checks for ``ha set``; returns the node address this host owns."""
    for field, name in (("ha.kad_vif", ha.kad_vif), ("ha.kad_vip", ha.vip_iface)):
        if name not in addrs:
            raise ConfigError(field, f"no interface {name} on this host")
    for route in ha.routes:
        if route.iface not in addrs:
            raise ConfigError("ha.routes", f"no interface {route.iface} on this host")
    a, b = ha.ha_node_list
    owned = [n for n in (a, b) if owners(addrs, n)]
    if not owned:
        raise ConfigError("ha.ha_node_list", f"this host owns neither {a} nor {b}")
    if len(owned) == 2:
        raise ConfigError("ha.ha_node_list", f"this host owns both {a} and {b}")
    self_addr = owned[0]
    if ha.kad_vif not in owners(addrs, self_addr):
        where = ", ".join(owners(addrs, self_addr))
        raise ConfigError("ha.kad_vif", f"{self_addr} is on {where}, not on {ha.kad_vif}")
    _check_vip(ha, addrs)
    return self_addr


def _check_vip(ha: HaConfig, addrs: Addresses) -> None:
    vip = ha.kad_vip.address
    elsewhere = [name for name in owners(addrs, vip) if name != ha.vip_iface]
    if elsewhere:  # on the VIP's own interface it may simply be held by keepalived right now
        raise ConfigError("ha.kad_vip", f"{vip} is already an address of {', '.join(elsewhere)}")
    subnets = [
        i.network
        for i in addrs[ha.vip_iface]
        if i.version == vip.version and i.ip != vip and vip in i.network
    ]
    if not subnets:
        if owners(addrs, vip):
            raise ConfigError(
                "ha.kad_vip", f"{vip} is an address of {ha.vip_iface} itself, not a free address"
            )
        raise ConfigError("ha.kad_vip", f"{vip} is in no subnet of {ha.vip_iface}")
    for net in subnets:
        which = subnet_own(vip, net)
        if which is not None:
            raise ConfigError("ha.kad_vip", f"{vip} is the {which} address of {net}")


def check_bgp_host(bgp: BgpConfig, addrs: Addresses) -> None:
    if not owners(addrs, bgp.local_ip):
        raise ConfigError("bgp.local_ip", f"{bgp.local_ip} is not an address of this host")
