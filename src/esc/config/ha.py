"""``[ha]``: the seed's ``escadm ha set`` arguments plus the agent's VRRP timing."""

from __future__ import annotations

import ipaddress
import math
import re
from typing import Annotated, Literal

from pydantic import BeforeValidator, ValidationError, field_validator, model_validator

from esc.addresses import check_ifname, parse_ip, subnet_own
from esc.config.types import (
    STR,
    TUPLE,
    GatewayIp,
    IfName,
    Model,
    NextHopIp,
    NodeIp,
    RuleError,
    VipIp,
    VrId,
    absolute_path,
    decimal_int,
    first_message,
    no_control,
)

_NODE_NAME = re.compile(r"[a-z0-9][a-z0-9_\-]{0,62}")
# keepalived's VRRPv3 counts the advert interval in centiseconds, 1 to 4095 (12 bits)
ADVERT_CENTIS = (1, 4095)


class Vip(Model):
    """The northbound virtual IP: ``192.0.2.254``, ``192.0.2.254:eth2``,
    ``[2001:db8::fc/48]:eth0``. ``iface`` None means ``kad_vif``."""

    address: VipIp
    prefixlen: int | None = None
    iface: IfName | None = None

    @classmethod
    def parse(cls, text: str) -> Vip:
        text = no_control(text).strip()
        iface: str | None = None
        if text.startswith("["):
            end = text.find("]")
            if end < 0:
                raise ValueError(f"{text!r}: missing ']'")
            body, rest = text[1:end], text[end + 1 :]
            if rest:
                if not rest.startswith(":"):
                    raise ValueError(f"{text!r}: expected ':IFACE' after ']'")
                iface = rest[1:]
        else:
            body = text
            try:
                ipaddress.ip_interface(body)
            except ValueError:
                if ":" in body:
                    body, iface = body.rsplit(":", 1)
        addr_text, slash, plen_text = body.partition("/")
        address = parse_ip(addr_text)
        prefixlen: int | None = None
        if slash:
            bad = ValueError(f"{text!r}: bad prefix length {plen_text!r}")
            try:
                prefixlen = decimal_int(plen_text)
            except ValueError:
                raise bad from None
            if prefixlen > address.max_prefixlen:
                raise bad
        if iface is not None:
            check_ifname(iface)
        try:
            return cls(address=address, prefixlen=prefixlen, iface=iface)
        except ValidationError as exc:
            raise ValueError(first_message(exc)) from None

    @model_validator(mode="after")
    def _not_the_subnets_own(self) -> Vip:
        if self.prefixlen is not None:
            net = ipaddress.ip_network(f"{self.address}/{self.prefixlen}", strict=False)
            which = subnet_own(self.address, net)
            if which is not None:
                raise ValueError(f"{self.address} is the {which} address of {net}")
        return self

    def __str__(self) -> str:
        plen = f"/{self.prefixlen}" if self.prefixlen is not None else ""
        if self.iface is None:
            return (
                f"{self.address}{plen}"
                if self.address.version == 4 or not plen
                else f"[{self.address}{plen}]"
            )
        if self.address.version == 6:
            return f"[{self.address}{plen}]:{self.iface}"
        return f"{self.address}{plen}:{self.iface}"


class Route(Model):
    """A static route the node applies: ``DEST/LEN:GW:IFACE`` (IPv6 in brackets)."""

    dest: str
    gateway: NextHopIp
    iface: IfName

    @field_validator("dest")
    @classmethod
    def _dest(cls, v: str) -> str:
        """Any network (a default route too), except those no gateway can lead to: loopback
        (the kernel keeps it local) and multicast (not forwarded to a unicast next hop)."""
        net = ipaddress.ip_network(no_control(v), strict=False)
        if net.is_loopback or net.is_multicast:
            kind = "loopback" if net.is_loopback else "multicast"
            raise ValueError(f"{net} is a {kind} network: no route via a gateway can reach it")
        return str(net)

    @model_validator(mode="after")
    def _one_family(self) -> Route:
        if ipaddress.ip_network(self.dest).version != self.gateway.version:
            raise RuleError(
                "gateway",
                f"{self.dest} via {self.gateway}: gateway and destination differ in family",
            )
        return self

    @classmethod
    def parse(cls, text: str) -> Route:
        text = no_control(text).strip()
        m = re.fullmatch(r"\[?([^\]]+?)\]?:\[?([0-9A-Fa-f.:]+?)\]?:([^:]+)", text)
        if m is None:
            raise ValueError(f"{text!r} is not DEST/LEN:GW:IFACE")
        dest, gw, iface = m.groups()
        try:
            return cls(dest=dest, gateway=parse_ip(gw), iface=iface)
        except ValidationError as exc:
            raise ValueError(first_message(exc)) from None


def _vip(value: object) -> object:
    return Vip.parse(value) if isinstance(value, str) else value


def _routes(value: object) -> object:
    if isinstance(value, list | tuple):
        return tuple(Route.parse(v) if isinstance(v, str) else v for v in value)
    return value


def _two(value: object) -> object:
    if isinstance(value, list | tuple):
        if len(value) != 2:
            raise ValueError("needs exactly two addresses: IP1 IP2")
        return tuple(value)
    return value


def _advert_int(value: object) -> float:
    """Seconds in keepalived's VRRPv3 range and granularity: a multiple of 0.01 from 0.01 to
    40.95 (sub-second intervals need v3, which counts centiseconds in 12 bits). A number, not
    text (the flag's text is made one by ``config_flags``)."""
    low, high = ADVERT_CENTIS
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        centis = round(value * 100)
        if abs(centis - value * 100) < 1e-6 and low <= centis <= high:
            return float(value)
    raise ValueError(
        f"must be seconds, a multiple of 0.01 between {low / 100} and {high / 100} (VRRPv3)"
    )


WITNESS_NAME = "witness"  # the witness host's etcd member (the nodes' are node_names)
HaMode = Literal["drbd", "drbd_on_cinder", "cinder", "no_ha"]


class HaConfig(Model):
    """The seed's ``escadm ha set`` arguments plus the agent's VRRP timing."""

    ha_mode: HaMode = "drbd"
    ha_node_list: Annotated[tuple[NodeIp, NodeIp], BeforeValidator(_two)]
    kad_vip: Annotated[Vip, BeforeValidator(_vip), STR]
    kad_vif: IfName
    kad_vri: VrId | None = None
    advert_int: Annotated[float, BeforeValidator(_advert_int)] = 0.2
    gateway_ip: GatewayIp | None = None
    db_volume_id: str | None = None
    db_volume_path: str | None = None
    routes: Annotated[tuple[Route, ...], BeforeValidator(_routes)] = ()
    # The nodes' names in ha_node_list order: replication application names, slots, logs.
    node_names: Annotated[tuple[str, str], TUPLE] = ("esc-ha-0", "esc-ha-1")
    # "etcd": quorum mode (esc.core.quorum), three etcd members: one per node (on its
    # ha_node_list address) and one on the witness host; timing in [quorum].
    quorum: Literal["none", "etcd"] = "none"
    witness: NodeIp | None = None

    @field_validator("db_volume_id")
    @classmethod
    def _volume_id(cls, v: str | None) -> str | None:
        if v is not None and not no_control(v).strip():
            raise ValueError("must not be empty")
        return v

    @field_validator("db_volume_path")
    @classmethod
    def _volume_path(cls, v: str | None) -> str | None:
        return None if v is None else absolute_path(v)

    @field_validator("node_names")
    @classmethod
    def _names(cls, v: tuple[str, str]) -> tuple[str, str]:
        for name in v:
            if not _NODE_NAME.fullmatch(name):
                raise ValueError(f"{name!r}: lower-case letters, digits, '_', '-'")
        if v[0] == v[1]:
            raise ValueError("the two names must differ")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> HaConfig:
        a, b = self.ha_node_list
        if a == b:
            raise RuleError("ha_node_list", "the two node addresses must differ")
        if a.version != b.version:
            raise RuleError("ha_node_list", "both node addresses must be of one family")
        vip = self.kad_vip.address
        if vip in (a, b):
            raise RuleError("kad_vip", "must differ from both node addresses")
        if vip.version == 4 and a.version == 6:
            # (An IPv6 VIP over IPv4 nodes is fine: VRRP for it runs over IPv6 link-local on
            # kad_vif, see drivers/keepalived_conf.py.)
            raise RuleError(
                "kad_vip",
                "an IPv4 VIP needs IPv4 ha_node_list: VRRP carries one family per "
                "instance and cannot advertise an IPv4 VIP from IPv6-only nodes",
            )
        gateway = self.gateway_ip
        if gateway is not None and gateway.version != vip.version:
            raise RuleError("gateway_ip", "must be of the family of kad_vip")
        if gateway is not None and gateway in (vip, a, b):
            raise RuleError(
                "gateway_ip", "must be the router the nodes track, not the VIP or a node address"
            )
        if self.quorum == "etcd":
            w = self.witness
            if w is None:
                raise RuleError("witness", 'quorum = "etcd" needs the witness host\'s address')
            if w in (a, b, vip):
                raise RuleError("witness", "must be a third host: not a node address or the VIP")
            if w.version != a.version:
                raise RuleError("witness", "must be of the family of ha_node_list")
            if self.ha_mode == "cinder":
                raise RuleError("quorum", "etcd quorum mode needs replicated storage, not cinder")
            if WITNESS_NAME in self.node_names:
                raise RuleError("node_names", f"{WITNESS_NAME!r} is the witness's etcd member")
        elif self.witness is not None:
            raise RuleError("witness", 'only with quorum = "etcd"')
        if self.db_volume_id is not None and self.db_volume_path is not None:
            raise RuleError("db_volume_path", "not allowed with db_volume_id (one or the other)")
        if self.ha_mode in ("cinder", "drbd_on_cinder") and not (
            self.db_volume_id or self.db_volume_path
        ):
            raise RuleError("ha_mode", f"{self.ha_mode} needs db_volume_id or db_volume_path")
        return self

    @property
    def vrid(self) -> int:
        """``kad_vri`` or the VIP's last byte (never 0)."""
        if self.kad_vri is not None:
            return self.kad_vri
        last = int(self.kad_vip.address) & 0xFF
        return last or 1

    @property
    def vip_iface(self) -> str:
        return self.kad_vip.iface or self.kad_vif
