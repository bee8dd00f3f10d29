"""The project's one config schema (pydantic, frozen), its file format (TOML) and its paths.

Every component reads the same file, ``<root>/etc/esc/esc.toml``. A value that is wrong is
reported as a :class:`ConfigError` naming the dotted field (``ha.kad_vri``), and a file is only
ever replaced atomically, so a failed write leaves the old config byte-for-byte unchanged. A
rule over several fields (a model validator) starts its message with the field it is about
(``kad_vip: must differ ...``), which :func:`config_error` turns into ``ha.kad_vip``.

Addresses: any unicast address is accepted. Each kind of address setting has its own type
(``NodeIp``, ``VipIp``, ...) refusing only what can never work there (``esc.addresses``).
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import tomli_w
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    field_validator,
    model_validator,
)

from esc.addresses import (
    IPAddress,
    Use,
    check_address,
    check_ifname,
    is_allowed,
    parse_ip,
    subnet_own,
)
from esc.errors import ConfigError
from esc.files import write_atomic as write_atomic  # noqa: PLC0414 (re-exported for mypy)

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def no_control(text: str) -> str:
    """Refuse control characters: values end up in generated config and ExaBGP commands."""
    if _CONTROL.search(text):
        raise ValueError("must not contain control characters (newline, tab, ...)")
    return text


def _ip(value: object) -> IPAddress:
    if isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return value
    if not isinstance(value, str):
        raise ValueError("must be an IP address string")
    return parse_ip(no_control(value))


_NO_ZONE = "it is usable only with an interface (a zone), which this setting cannot carry"
_UNROUTED = "routers never forward link-local addresses, so other networks cannot reach it"

# One Use per kind of address setting; its reasons end up in the error messages. Link-local
# (see addresses.py for the general rule): the node addresses carry VRRP unicast, replication
# and the peer API between two hosts, which works over IPv4 link-local on one link but has no
# place for an IPv6 zone. The VIP and the anycast address are reached from other networks, so
# neither family's link-local can serve. The tracked gateway is pinged without an interface; a
# route's next hop names its interface, so both families work there. BGP over IPv4 link-local
# is common (cloud peering on 169.254.x.x/30); ExaBGP's neighbour has no zone for an IPv6 one.
NODE = Use(
    loopback="the other node can never reach it",
    link_local_v4=None,
    link_local_v6=f"for keepalived, replication and the peer API {_NO_ZONE}",
)
VIP = Use(
    loopback="clients on other hosts can never reach it",
    link_local_v4=f"{_UNROUTED}, and hosts there pick and defend their own (RFC 3927)",
    link_local_v6=f"{_UNROUTED}, and every client would need a zone",
)
ANYCAST = Use(
    loopback="announcing it attracts nothing",
    link_local_v4=_UNROUTED,
    link_local_v6=_UNROUTED,
)
GATEWAY = Use(
    loopback="pinging this host says nothing about reaching the gateway",
    link_local_v4=None,
    link_local_v6="the gateway probe pings it without an interface: give a global address",
)
NEXT_HOP = Use(
    loopback="a route cannot go via this host's loopback", link_local_v4=None, link_local_v6=None
)
BGP_PEER = Use(
    loopback="a BGP session with a router never runs over loopback",
    link_local_v4=None,
    link_local_v6=_NO_ZONE,
)
LISTEN = Use(loopback=None, link_local_v4=None, link_local_v6=_NO_ZONE, unspecified=None)


def _checked(use: Use) -> AfterValidator:
    return AfterValidator(lambda addr: check_address(addr, use))


_PARSE = BeforeValidator(_ip)
_STR = PlainSerializer(str, return_type=str)
NodeIp = Annotated[IPAddress, _PARSE, _checked(NODE), _STR]
VipIp = Annotated[IPAddress, _PARSE, _checked(VIP), _STR]
AnycastIp = Annotated[IPAddress, _PARSE, _checked(ANYCAST), _STR]
GatewayIp = Annotated[IPAddress, _PARSE, _checked(GATEWAY), _STR]
NextHopIp = Annotated[IPAddress, _PARSE, _checked(NEXT_HOP), _STR]
BgpPeerIp = Annotated[IPAddress, _PARSE, _checked(BGP_PEER), _STR]
ListenIp = Annotated[IPAddress, _PARSE, _checked(LISTEN), _STR]


def _first_message(exc: ValidationError) -> str:
    return str(exc.errors()[0]["msg"]).removeprefix("Value error, ")


IfName = Annotated[str, BeforeValidator(lambda v: check_ifname(no_control(str(v))))]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Vip(_Model):
    """The northbound virtual IP: ``192.0.2.254``, ``192.0.2.254:eth2``,
    ``[2001:db8::fc/48]:eth0``. ``iface`` None means ``kad_vif``."""

    address: VipIp
    prefixlen: int | None = None
    iface: IfName | None = None

    @classmethod
    def parse(cls, text: str) -> Vip:
        text = no_control(text.strip())
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
        addr_text, _, plen_text = body.partition("/")
        address = parse_ip(addr_text)
        prefixlen = None
        if plen_text:
            if not plen_text.isdigit() or int(plen_text) > address.max_prefixlen:
                raise ValueError(f"{text!r}: bad prefix length {plen_text!r}")
            prefixlen = int(plen_text)
        if iface is not None:
            check_ifname(iface)
        try:
            return cls(address=address, prefixlen=prefixlen, iface=iface)
        except ValidationError as exc:
            raise ValueError(_first_message(exc)) from None

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


class Route(_Model):
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
            raise ValueError(
                f"{self.dest} via {self.gateway}: gateway and destination differ in family"
            )
        return self

    @classmethod
    def parse(cls, text: str) -> Route:
        text = no_control(text.strip())
        m = re.fullmatch(r"\[?([^\]]+?)\]?:\[?([0-9A-Fa-f.:]+?)\]?:([^:]+)", text)
        if m is None:
            raise ValueError(f"{text!r} is not DEST/LEN:GW:IFACE")
        dest, gw, iface = m.groups()
        try:
            return cls(dest=dest, gateway=parse_ip(gw), iface=iface)
        except ValidationError as exc:
            raise ValueError(_first_message(exc)) from None


def _vip(value: object) -> object:
    return Vip.parse(value) if isinstance(value, str) else value


def _routes(value: object) -> object:
    if isinstance(value, list):
        return [Route.parse(v) if isinstance(v, str) else v for v in value]
    return value


HaMode = Literal["drbd", "drbd_on_cinder", "cinder", "no_ha"]


class HaConfig(_Model):
    """The seed's ``escadm ha set`` arguments plus the agent's VRRP timing."""

    ha_mode: HaMode = "drbd"
    ha_node_list: tuple[NodeIp, NodeIp]
    kad_vip: Annotated[Vip, BeforeValidator(_vip), PlainSerializer(str, return_type=str)]
    kad_vif: IfName
    kad_vri: int | None = Field(default=None, ge=1, le=255)
    advert_int: float = Field(default=0.2, ge=0.01, le=255)
    gateway_ip: GatewayIp | None = None
    db_volume_id: str | None = None
    db_volume_path: str | None = None
    routes: Annotated[tuple[Route, ...], BeforeValidator(_routes)] = ()
    # The nodes' names in ha_node_list order: replication application names, slots, logs.
    node_names: tuple[str, str] = ("esc-ha-0", "esc-ha-1")

    @field_validator("db_volume_id", "db_volume_path")
    @classmethod
    def _text(cls, v: str | None) -> str | None:
        return None if v is None else no_control(v)

    @model_validator(mode="after")
    def _consistent(self) -> HaConfig:
        a, b = self.ha_node_list
        if a == b:
            raise ValueError("ha_node_list: the two node addresses must differ")
        if a.version != b.version:
            raise ValueError("ha_node_list: both node addresses must be of one family")
        vip = self.kad_vip.address
        if vip in (a, b):
            raise ValueError("kad_vip: must differ from both node addresses")
        if vip.version == 4 and a.version == 6:
            # (An IPv6 VIP over IPv4 nodes is fine: VRRP for it runs over IPv6 link-local on
            # kad_vif, see drivers/keepalived_conf.py.)
            raise ValueError(
                "kad_vip: an IPv4 VIP needs IPv4 ha_node_list: VRRP carries one family per "
                "instance and cannot advertise an IPv4 VIP from IPv6-only nodes"
            )
        gateway = self.gateway_ip
        if gateway is not None and gateway.version != vip.version:
            raise ValueError("gateway_ip: must be of the family of kad_vip")
        if gateway is not None and gateway in (vip, a, b):
            raise ValueError(
                "gateway_ip: must be the router the nodes track, not the VIP or a node address"
            )
        for name in self.node_names:
            if not re.fullmatch(r"[a-z0-9][a-z0-9_\-]{0,62}", name):
                raise ValueError(f"node_names: {name!r}: lower-case letters, digits, '_', '-'")
        if self.node_names[0] == self.node_names[1]:
            raise ValueError("node_names: the two names must differ")
        if self.db_volume_id and self.db_volume_path:
            raise ValueError("db_volume_id and db_volume_path are exclusive")
        if self.ha_mode in ("cinder", "drbd_on_cinder") and not (
            self.db_volume_id or self.db_volume_path
        ):
            raise ValueError(f"ha_mode {self.ha_mode} needs db_volume_id or db_volume_path")
        if self.db_volume_path is not None and not self.db_volume_path.startswith("/"):
            raise ValueError("db_volume_path: must be an absolute path")
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


class BgpConfig(_Model):
    """The seed's ``escadm bgp set`` arguments."""

    local_ip: BgpPeerIp
    anycast_ip: AnycastIp
    remote_ip: BgpPeerIp
    local_as: int = Field(ge=1, le=4294967295)
    remote_as: int = Field(ge=1, le=4294967295)
    local_router_id: Annotated[ipaddress.IPv4Address, PlainSerializer(str, return_type=str)]
    md5: str | None = Field(default=None, repr=False)
    hold_time: int = Field(default=9, ge=3, le=65535)
    reannounce_s: float = Field(default=5.0, gt=0)

    @field_validator("md5")
    @classmethod
    def _md5(cls, v: str | None) -> str | None:
        if v is None:
            return v
        no_control(v)
        if not 1 <= len(v) <= 80 or any(c in v for c in " \"';{}\\"):
            raise ValueError("md5: 1-80 printable characters, no spaces, quotes, ';', braces")
        return v

    @field_validator("local_router_id")
    @classmethod
    def _router_id(cls, v: ipaddress.IPv4Address) -> ipaddress.IPv4Address:
        if int(v) == 0:
            raise ValueError("a BGP router id must not be 0.0.0.0 (RFC 6286)")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> BgpConfig:
        if self.remote_ip.version != self.local_ip.version:
            raise ValueError("remote_ip: must be of the family of local_ip")
        if self.remote_ip == self.local_ip:
            raise ValueError("remote_ip: must differ from local_ip")
        if self.anycast_ip.version != self.local_ip.version:
            # "next-hop self" would give the route a next hop of the other family
            raise ValueError("anycast_ip: must be of the family of local_ip")
        if self.anycast_ip in (self.local_ip, self.remote_ip):
            raise ValueError("anycast_ip: must differ from local_ip and remote_ip")
        return self


class ReplicationConfig(_Model):
    on_standby_loss: Literal["strict", "available"] = "available"
    standby_loss_grace_s: float = Field(default=5.0, ge=0)
    password: str = Field(default="", repr=False)

    @field_validator("password")
    @classmethod
    def _pw(cls, v: str) -> str:
        return no_control(v)


class DatabaseConfig(_Model):
    port: int = Field(default=5432, ge=1, le=65535)
    name: str = "esc"
    pg_bindir: str = "/usr/lib/postgresql/15/bin"
    # WAL a replication slot may hold for an absent standby before it is given up (then that
    # standby is re-cloned); bounds the primary's disk use in a long outage
    max_slot_wal_keep_size_mb: int = Field(default=4096, ge=64)
    # where ha.db_volume_id is looked up (virtio-<id[:20]>), as OpenStack exposes volumes
    volume_dir: str = "/dev/disk/by-id"

    @field_validator("volume_dir", "pg_bindir")
    @classmethod
    def _dir(cls, v: str) -> str:
        if not v.startswith("/"):
            raise ValueError("must be an absolute path")
        return no_control(v)


class AgentConfig(_Model):
    cycle_s: float = Field(default=0.2, gt=0, le=10)
    peer_port: int = Field(default=7400, ge=1, le=65535)
    peer_secret: str = Field(default="", repr=False)
    # A peer view older than this is not trusted: keep it below VRRP's master-down time.
    peer_timeout_s: float = Field(default=0.4, gt=0)
    health_failures: int = Field(default=3, ge=1)
    heartbeat_timeout_s: float = Field(default=1.5, gt=0)

    @field_validator("peer_secret")
    @classmethod
    def _secret(cls, v: str) -> str:
        return no_control(v)


def _subnet(value: object) -> object:
    if isinstance(value, str):
        try:
            return ipaddress.ip_network(no_control(value))
        except ValueError as exc:
            raise ValueError(f"{value!r} is not a network (ADDRESS/LEN, host bits zero)") from exc
    return value


Subnet = Annotated[
    ipaddress.IPv4Network | ipaddress.IPv6Network,
    BeforeValidator(_subnet),
    PlainSerializer(str, return_type=str),
]

# Linux network namespace names: a file under /run/netns.
_NETNS = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,62}")


class LabVimSettings(_Model):
    """The lab VIM (``manager.vim = "lab"``): each VM is a network namespace with one veth on
    the VNF bridge ``bridge`` in the namespace ``switch_netns``, its address from ``subnet``
    (host numbers from ``first_host`` up: lower ones are left to the controller nodes), and a
    responder on ``tcp_port``. ``state_dir`` is the registry both managers share.

    The default subnet, 2001:db8:200::/64, is used by no lab network of either topology
    (single: 192.0.2.0/24 + 2001:db8::/64; multi: 198.51.100.0/24 + 2001:db8:100::/64,
    192.0.2.0/24, 203.0.113.0/24)."""

    state_dir: str = "/var/tmp/esc-lab/vim"
    switch_netns: str = "esc-sw"
    bridge: IfName = "br-vnf"
    subnet: Subnet = ipaddress.IPv6Network("2001:db8:200::/64")
    first_host: int = Field(default=0x100, ge=1)
    tcp_port: int = Field(default=7000, ge=1, le=65535)
    # Simulated boot time: a create takes at least this long, so failover can hit it mid-way.
    create_delay_s: float = Field(default=0.5, ge=0, le=600)
    # The interpreter that runs the responder inside each VM; None: the manager's own.
    python: str | None = None

    @field_validator("state_dir", "python")
    @classmethod
    def _abs_path(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if not no_control(v).startswith("/"):
            raise ValueError("must be an absolute path")
        return v

    @field_validator("switch_netns")
    @classmethod
    def _netns(cls, v: str) -> str:
        if not _NETNS.fullmatch(v):
            raise ValueError(f"{v!r}: letters, digits, '_', '.', '-' (max 63)")
        return v

    @field_validator("subnet")
    @classmethod
    def _doc_subnet(
        cls, v: ipaddress.IPv4Network | ipaddress.IPv6Network
    ) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        # the lab's traffic rule (esc/addresses.py): its VMs are lab traffic
        if not (is_allowed(v.network_address) and is_allowed(v.broadcast_address)):
            raise ValueError(
                f"{v} is outside the documentation ranges the lab keeps to "
                "(192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32)"
            )
        return v

    @model_validator(mode="after")
    def _room(self) -> LabVimSettings:
        # the last IPv4 address is the broadcast address
        if self.first_host >= self.subnet.num_addresses - 1:
            raise ValueError(f"first_host: {self.first_host} leaves no address in {self.subnet}")
        return self


class ManagerConfig(_Model):
    """escmanager's northbound listeners. Plain HTTP is off unless ``http_port`` is set; the
    certificate is generated at first start when missing (default ``<etc>/manager.crt|.key``)."""

    bind: ListenIp = ipaddress.IPv6Address("::")  # "::" is dual-stack (IPv4-mapped accepted)
    https_port: int = Field(default=8443, ge=1, le=65535)
    http_port: int | None = Field(default=None, ge=1, le=65535)
    # the operator portal (HTTPS, same certificate and users as the API); None: off
    portal_port: int | None = Field(default=9001, ge=1, le=65535)
    cert_file: str | None = None
    key_file: str | None = None
    vim: Literal["fake", "lab"] = "fake"
    lab_vim: LabVimSettings | None = None  # settings of vim = "lab"; None: the defaults

    @field_validator("cert_file", "key_file")
    @classmethod
    def _path(cls, v: str | None) -> str | None:
        return None if v is None else no_control(v)

    @model_validator(mode="after")
    def _distinct_ports(self) -> ManagerConfig:
        seen: dict[int, str] = {}
        for name in ("https_port", "http_port", "portal_port"):
            port = getattr(self, name)
            if port is None:
                continue
            if port in seen:
                raise ValueError(f"{name}: {port} is already the {seen[port]}")
            seen[port] = name
        return self


class EscConfig(_Model):
    """The whole config of one node."""

    node_name: str = "esc"
    ha: HaConfig | None = None
    bgp: BgpConfig | None = None
    replication: ReplicationConfig = ReplicationConfig()
    database: DatabaseConfig = DatabaseConfig()
    agent: AgentConfig = AgentConfig()
    manager: ManagerConfig = ManagerConfig()

    @field_validator("node_name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,62}", v):
            raise ValueError("node_name: letters, digits, '_', '.', '-' (max 63)")
        return v


@dataclass(frozen=True)
class NodePaths:
    """Where one node keeps things. ``root`` is ``/`` on a real VM; the lab gives each node its own.

    Set ``ESC_ROOT`` to point every tool at a node root.
    """

    root: Path

    @classmethod
    def from_env(cls) -> NodePaths:
        return cls(Path(os.environ.get("ESC_ROOT", "/")))

    @property
    def etc_dir(self) -> Path:
        return self.root / "etc" / "esc"

    @property
    def data_dir(self) -> Path:
        return self.root / "var" / "lib" / "esc"

    @property
    def log_dir(self) -> Path:
        return self.root / "var" / "log" / "esc"

    @property
    def run_dir(self) -> Path:
        return self.root / "run" / "esc"

    @property
    def config_file(self) -> Path:
        return self.etc_dir / "esc.toml"

    @property
    def state_file(self) -> Path:
        return self.run_dir / "keepalived_state"

    @property
    def pg_socket_dir(self) -> Path:
        """PostgreSQL's unix socket directory (per node: /run is shared between lab nodes)."""
        return self.run_dir / "postgresql"

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pgdata"

    def all_dirs(self) -> tuple[Path, ...]:
        return (self.etc_dir, self.data_dir, self.log_dir, self.run_dir)


# A model-level rule names its field first: "kad_vip: must differ ..." (module docstring).
_LEADING_FIELD = re.compile(r"([a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)*): (.+)", re.DOTALL)


def config_error(err: ValidationError, prefix: tuple[str, ...] = ()) -> ConfigError:
    """The first error as a :class:`ConfigError` naming the dotted field. A model-level rule's
    message starts with the field it is about (``kad_vip: must differ ...`` in ``ha``), which
    then joins the location: ``ha.kad_vip``."""
    first = err.errors()[0]
    loc = [*prefix, *(str(p) for p in first["loc"])]
    msg = str(first["msg"]).removeprefix("Value error, ")
    m = _LEADING_FIELD.fullmatch(msg)
    if m is not None:
        named = m.group(1).split(".")
        if loc[-len(named) :] != named:
            loc += named
        msg = m.group(2)
    return ConfigError(".".join(loc) or "config", msg)


def parse_config(data: dict[str, Any]) -> EscConfig:
    """Validate a dict into an :class:`EscConfig`; errors name the dotted field."""
    try:
        return EscConfig.model_validate(data)
    except ValidationError as exc:
        raise config_error(exc) from None


def load_config(path: Path) -> EscConfig:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(str(path), "no such config file") from None
    try:
        data = tomllib.loads(raw.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), f"not valid TOML: {exc}") from None
    return parse_config(data)


def dump_config(cfg: EscConfig) -> str:
    data = cfg.model_dump(mode="json", exclude_none=True)
    return tomli_w.dumps(data)


def save_config(cfg: EscConfig, path: Path) -> None:
    """Write atomically (:func:`esc.files.write_atomic`: a new file, fsync, rename, fsync of the
    directory), mode 0600: it holds secrets."""
    write_atomic(path, dump_config(cfg), mode=0o600)
