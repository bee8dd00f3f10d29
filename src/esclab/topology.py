"""The lab's hosts, networks and addresses as values. No I/O in this module.

``single`` puts every host on one network (192.0.2.0/24 + 2001:db8::/64). ``multi`` follows the
seed's three-network example: a northbound network (198.51.100.0/24 + 2001:db8:100::/64) where
the VIP lives, a sync network (192.0.2.0/24) for VRRP and replication, and a management network
(203.0.113.0/24). Bridges live in their own namespace (``esc-sw``), so the lab touches nothing
in the machine's root namespace.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Literal

from esc.addresses import IPInterface, is_allowed
from esc.errors import LabError

TopologyKind = Literal["single", "multi"]
SWITCH_NS = "esc-sw"
NODES = ("esc-ha-0", "esc-ha-1")
# The witness: quorum mode's third etcd member (esc-witness), on the sync network; idle (its
# namespace only) in two-node mode.
WITNESS = "witness"
HOSTS = (*NODES, "nb", "router", WITNESS)
SHORT = {"esc-ha-0": "ha0", "esc-ha-1": "ha1", "nb": "nb", "router": "rtr", WITNESS: "wit"}


@dataclass(frozen=True)
class Network:
    name: str  # "sync", "northbound", "mgmt", "vnf"
    code: str  # one letter, used in switch-side interface names
    v4: ipaddress.IPv4Network | None
    v6: ipaddress.IPv6Network | None = None

    @property
    def bridge(self) -> str:
        return f"br-{self.name}"[:15]


@dataclass(frozen=True)
class Attachment:
    host: str
    network: str
    iface: str  # name inside the host
    addresses: tuple[IPInterface, ...]

    @property
    def switch_port(self) -> str:
        """The veth end in the switch namespace ('ha0.s'): unplug it to pull the cable."""
        return f"{SHORT[self.host]}.{self.network[0]}"


@dataclass(frozen=True)
class Topology:
    kind: TopologyKind
    networks: tuple[Network, ...]
    attachments: tuple[Attachment, ...]
    gateways: dict[str, ipaddress.IPv4Address]  # host -> default gateway (IPv4)
    gateways6: dict[str, ipaddress.IPv6Address]

    @property
    def hosts(self) -> tuple[str, ...]:
        return HOSTS

    @property
    def namespaces(self) -> tuple[str, ...]:
        return (*HOSTS, SWITCH_NS)

    def network(self, name: str) -> Network:
        for net in self.networks:
            if net.name == name:
                return net
        names = ", ".join(n.name for n in self.networks)
        raise LabError(f"no network {name!r} in the {self.kind} topology (have: {names})")

    def attachment(self, host: str, network: str) -> Attachment:
        if host not in HOSTS:
            raise LabError(f"no host {host!r} (have: {', '.join(HOSTS)})")
        self.network(network)
        for att in self.attachments:
            if att.host == host and att.network == network:
                return att
        raise LabError(f"host {host} is not on network {network}")

    def of_host(self, host: str) -> tuple[Attachment, ...]:
        return tuple(a for a in self.attachments if a.host == host)

    def address(self, host: str, network: str, version: int = 4) -> IPInterface:
        for addr in self.attachment(host, network).addresses:
            if addr.version == version:
                return addr
        raise LabError(f"host {host} has no IPv{version} address on {network}")

    @property
    def sync_network(self) -> str:
        return "sync"

    @property
    def northbound_network(self) -> str:
        return "sync" if self.kind == "single" else "northbound"


_HOST_NUM = {"router": 1, "esc-ha-0": 10, "esc-ha-1": 11, "nb": 50, WITNESS: 30}


def _iface(
    v4: ipaddress.IPv4Network | None, v6: ipaddress.IPv6Network | None, num: int
) -> tuple[IPInterface, ...]:
    out: list[IPInterface] = []
    if v4 is not None:
        out.append(ipaddress.IPv4Interface(f"{v4[num]}/{v4.prefixlen}"))
    if v6 is not None:
        # IPv6 host part reads like the IPv4 one: .10 -> ::10
        out.append(ipaddress.IPv6Interface(f"{v6[int(str(num), 16)]}/{v6.prefixlen}"))
    return tuple(out)


# The VNF network: the lab VIM's VMs (``esclab.vim``) join its bridge, and both
# controller nodes are on it too, as ESC's VNFs are connected to both nodes. IPv6 only: every
# IPv4 documentation /24 is taken by the multi topology.
VNF = Network("vnf", "v", None, ipaddress.IPv6Network("2001:db8:200::/64"))


def _vnf_attachments(iface: str) -> list[Attachment]:
    return [Attachment(h, "vnf", iface, _iface(None, VNF.v6, _HOST_NUM[h])) for h in NODES]


def build_topology(kind: TopologyKind) -> Topology:
    """The lab's fixed layout for ``kind``; every address is in a documentation range."""
    if kind == "single":
        lan = Network(
            "sync",
            "s",
            ipaddress.IPv4Network("192.0.2.0/24"),
            ipaddress.IPv6Network("2001:db8::/64"),
        )
        atts = (
            *(Attachment(h, "sync", "eth0", _iface(lan.v4, lan.v6, _HOST_NUM[h])) for h in HOSTS),
            *_vnf_attachments("eth1"),
        )
        assert lan.v4 is not None
        gw = lan.v4[1]
        gw6 = lan.v6[1] if lan.v6 else None
        assert gw6 is not None
        topo = Topology(
            kind,
            (lan, VNF),
            atts,
            {h: gw for h in HOSTS if h != "router"},
            {h: gw6 for h in HOSTS if h != "router"},
        )
    elif kind == "multi":
        nb = Network(
            "northbound",
            "n",
            ipaddress.IPv4Network("198.51.100.0/24"),
            ipaddress.IPv6Network("2001:db8:100::/64"),
        )
        sync = Network("sync", "s", ipaddress.IPv4Network("192.0.2.0/24"))
        mgmt = Network("mgmt", "m", ipaddress.IPv4Network("203.0.113.0/24"))
        atts_l: list[Attachment] = []
        for h in HOSTS:
            if h != WITNESS:  # the witness is on the sync network only
                atts_l.append(
                    Attachment(h, "northbound", "eth0", _iface(nb.v4, nb.v6, _HOST_NUM[h]))
                )
        for h in HOSTS:
            if h in NODES or h == WITNESS:
                nic = "eth1" if h in NODES else "eth0"
                atts_l.append(Attachment(h, "sync", nic, _iface(sync.v4, None, _HOST_NUM[h])))
        for h in NODES:
            atts_l.append(Attachment(h, "mgmt", "eth2", _iface(mgmt.v4, None, _HOST_NUM[h])))
        atts_l += _vnf_attachments("eth3")
        assert nb.v4 is not None
        gw = nb.v4[1]
        gw6 = nb.v6[1] if nb.v6 else None
        assert gw6 is not None
        routed = [h for h in HOSTS if h not in ("router", WITNESS)]
        topo = Topology(
            kind,
            (nb, sync, mgmt, VNF),
            tuple(atts_l),
            {h: gw for h in routed},
            {h: gw6 for h in routed},
        )
    else:
        raise LabError(f"--topology: unknown topology {kind!r} (single or multi)")
    check_topology(topo)
    return topo


def check_topology(topo: Topology) -> None:
    """Refuse any address outside the documentation ranges, and over-long interface names."""
    for att in topo.attachments:
        for addr in att.addresses:
            if not is_allowed(addr.ip):
                raise LabError(
                    f"{att.host}/{att.network}: {addr} is outside the documentation ranges"
                )
        if len(att.switch_port) > 15 or len(att.iface) > 15:
            raise LabError(f"interface name too long for {att.host}/{att.network}")
