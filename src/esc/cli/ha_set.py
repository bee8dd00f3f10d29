"""``escadm ha set``, ``escadm bgp set`` and ``escadm config validate``: seed-compatible flags.

Rules:

- Every error goes to stderr as ``escadm: --FLAG: message`` with exit code 2, and the config file
  stays byte-for-byte unchanged: nothing is written until the whole new config has passed the
  flag checks, the schema, the host checks and a dry render of keepalived/ExaBGP config.
- Schema errors name dotted fields (``ha.kad_vri``); they are translated back to the flag
  (``--kad_vri``) here, in one function.
- Facts about this host (interfaces and their addresses) come through :class:`HostFacts`, with a
  real implementation reading ``ip -j addr show`` and :class:`FakeHostFacts` for tests.
- The BGP MD5 secret is never echoed: the diff prints ``******`` and no error message quotes it.

Section semantics: when the identifying flags are given (``--ha_node_list --kad_vip --kad_vif``
for ``ha set``, the six address/AS flags for ``bgp set``) the section is rebuilt from the flags;
when none of them is given, the other flags update the existing section.
"""

from __future__ import annotations

import argparse
import ipaddress
import re
import sys
import tomllib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar, get_args

from pydantic import BaseModel, ValidationError

from esc.addresses import IPAddress, IPInterface, check_ifname, parse_ip, subnet_own
from esc.cli.secrets_cmd import generate_missing
from esc.config.schema import (
    BgpConfig,
    EscConfig,
    HaConfig,
    HaMode,
    NodePaths,
    Route,
    Vip,
    config_error,
    dump_config,
    load_config,
    parse_config,
    save_config,
)
from esc.drivers.exabgp_conf import render_exabgp
from esc.drivers.keepalived_conf import format_advert_int, render_keepalived
from esc.errors import ConfigError, EscError
from esc.host import HostFacts

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INVALID = 2

MASK = "******"
_SECRETS = frozenset({"md5", "password", "peer_secret"})
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_PLACEHOLDER_SCRIPT = Path("/usr/libexec/esc/esc-agent-alive")  # dry render only

HA_REQUIRED = ("ha_node_list", "kad_vip", "kad_vif")
HA_OPTIONAL = ("kad_vri", "ha_mode", "db_volume_id", "db_volume_path", "route", "advert_int")
HA_FLAGS = (*HA_REQUIRED, *HA_OPTIONAL, "gateway_ip")
BGP_REQUIRED = ("local_ip", "anycast_ip", "remote_ip", "local_as", "remote_as", "local_router_id")
BGP_FLAGS = (*BGP_REQUIRED, "md5")
# schema field -> flag, where the names differ
_FLAG_OF_FIELD = {"routes": "route"}

M = TypeVar("M", bound=BaseModel)


# ---------------------------------------------------------------------------------------------
# parsers


def add_ha_set_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    """Add ``set`` to the ``escadm ha`` subcommands; returns the new parser."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "set",
        help="set the HA pair's VRRP, VIP and storage settings",
        description="Set the HA section of the config (run `escadm reload` to apply).",
    )
    p.add_argument(
        "--ha_node_list",
        nargs="+",
        metavar="IP",
        help="the two node addresses (IP1 IP2 or IP1,IP2), one per node, same family",
    )
    p.add_argument(
        "--kad_vip", metavar="VIP[:IFACE]", help="192.0.2.254[:eth2], [2001:db8::fc/48]:eth0"
    )
    p.add_argument("--kad_vif", metavar="IFACE", help="interface of the VRRP heartbeat")
    p.add_argument("--kad_vri", metavar="N", help="VRRP router id 1-255 (default: VIP's last byte)")
    p.add_argument("--ha_mode", metavar="|".join(get_args(HaMode)), help="storage mode")
    p.add_argument("--db_volume_id", metavar="ID", help="cinder volume id")
    p.add_argument("--db_volume_path", metavar="PATH", help="external volume path")
    p.add_argument(
        "--route", action="append", metavar="DEST/LEN:GW:IFACE", help="static route (repeatable)"
    )
    p.add_argument("--advert_int", metavar="SECONDS", help="VRRP advert interval (0.01-40.95)")
    p.add_argument("--gateway_ip", metavar="IP", help="gateway the agent tracks")
    return p


def add_bgp_set_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    """Add ``set`` to the ``escadm bgp`` subcommands; returns the new parser."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "set",
        help="set the BGP anycast settings",
        description="Set the BGP section of the config (run `escadm reload` to apply).",
    )
    p.add_argument("--local_ip", metavar="IP", help="this node's BGP session address")
    p.add_argument("--anycast_ip", metavar="IP", help="address announced by the primary")
    p.add_argument("--remote_ip", metavar="IP", help="the router's address")
    p.add_argument("--local_as", metavar="AS", help="1-4294967295")
    p.add_argument("--remote_as", metavar="AS", help="1-4294967295")
    p.add_argument("--local_router_id", metavar="IPV4", help="BGP router id (IPv4 form)")
    p.add_argument("--md5", metavar="SECRET", help="TCP MD5 password (never printed)")
    return p


# ---------------------------------------------------------------------------------------------
# commands


def run_ha_set(args: argparse.Namespace, paths: NodePaths, host: HostFacts) -> int:
    """``escadm ha set``: validate, write the config atomically, print the diff."""
    try:
        old = _load_or_default(paths, host)
        given = _given(args, HA_FLAGS)
        values = _ha_values(given)
        base = _section_base(old.ha, given, HA_REQUIRED, "--ha_node_list", "HA")
        new_ha = _validated_section(HaConfig, {**base, **values}, "ha")
        new = _whole(old, "ha", new_ha)
        self_addr = _check_ha_host(new_ha, host.addresses())
        _translate(lambda: render_keepalived(new, self_addr, paths, _PLACEHOLDER_SCRIPT), "ha")
    except ConfigError as exc:
        return _fail(exc)
    except EscError as exc:
        print(f"escadm: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return _commit(old, new, "ha", paths)


def run_bgp_set(args: argparse.Namespace, paths: NodePaths, host: HostFacts) -> int:
    """``escadm bgp set``: validate, write the config atomically, print the diff (secret masked)."""
    secret = getattr(args, "md5", None)
    try:
        old = _load_or_default(paths, host)
        given = _given(args, BGP_FLAGS)
        values = _bgp_values(given)
        base = _section_base(old.bgp, given, BGP_REQUIRED, "--local_ip", "BGP")
        new_bgp = _validated_section(BgpConfig, {**base, **values}, "bgp")
        new = _whole(old, "bgp", new_bgp)
        _check_bgp_host(new_bgp, host.addresses())
        _translate(lambda: render_exabgp(new, ["/bin/true"]), "bgp")
    except ConfigError as exc:
        return _fail(exc, secret)
    except EscError as exc:
        print(f"escadm: {_scrub(str(exc), secret)}", file=sys.stderr)
        return EXIT_FAILED
    return _commit(old, new, "bgp", paths)


def run_config_validate(path: Path) -> int:
    """``escadm config validate [FILE]``: ``OK`` (exit 0) or the error naming the field (exit 2).

    Beyond the schema it dry-renders what can be rendered without this host's facts, so a
    config keepalived or ExaBGP would refuse is reported here too.
    """
    try:
        cfg = load_config(path)
        if cfg.ha is not None:
            render_keepalived(
                cfg, cfg.ha.ha_node_list[0], NodePaths(Path("/")), _PLACEHOLDER_SCRIPT
            )
        if cfg.bgp is not None:
            render_exabgp(cfg, ["/bin/true"])
    except ConfigError as exc:
        where = "" if exc.field == str(path) else f"{path}: "
        print(f"escadm: {where}{_scrub(str(exc), None)}", file=sys.stderr)
        return EXIT_INVALID
    print(f"OK: {path}")
    return EXIT_OK


# ---------------------------------------------------------------------------------------------
# flag parsing: each function raises ConfigError(field="--flag", ...)


def _given(args: argparse.Namespace, names: Sequence[str]) -> dict[str, Any]:
    """The flags actually given, with control characters refused (a newline never passes)."""
    given: dict[str, Any] = {}
    for name in names:
        value = getattr(args, name, None)
        if value is None:
            continue
        for item in value if isinstance(value, list) else [value]:
            if _CONTROL.search(str(item)):
                raise ConfigError(
                    f"--{name}", "must not contain control characters (newline, tab, ...)"
                )
        given[name] = value
    return given


def _message(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return str(exc.errors()[0]["msg"]).removeprefix("Value error, ")
    return str(exc)


def _ip_flag(flag: str, text: str) -> IPAddress:
    try:
        return parse_ip(text)
    except ValueError as exc:
        raise ConfigError(flag, _message(exc)) from None


def _int_flag(flag: str, text: str, low: int, high: int) -> int:
    if not text.isdigit() or not low <= int(text) <= high:
        raise ConfigError(flag, f"must be {low}-{high}")
    return int(text)


def _ha_values(given: Mapping[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    if "ha_node_list" in given:
        items = [p for v in given["ha_node_list"] for p in str(v).split(",") if p]
        if len(items) != 2:
            raise ConfigError("--ha_node_list", "needs exactly two addresses: IP1 IP2")
        a, b = (_ip_flag("--ha_node_list", t) for t in items)
        values["ha_node_list"] = (a, b)
    if "kad_vip" in given:
        try:
            values["kad_vip"] = Vip.parse(given["kad_vip"])
        except ValueError as exc:
            raise ConfigError("--kad_vip", _message(exc)) from None
    if "kad_vif" in given:
        values["kad_vif"] = _ifname_flag("--kad_vif", given["kad_vif"])
    if "kad_vri" in given:
        values["kad_vri"] = _int_flag("--kad_vri", given["kad_vri"], 1, 255)
    if "ha_mode" in given:
        modes = get_args(HaMode)
        if given["ha_mode"] not in modes:
            raise ConfigError("--ha_mode", f"must be one of {', '.join(modes)}")
        values["ha_mode"] = given["ha_mode"]
    if "db_volume_id" in given and "db_volume_path" in given:
        raise ConfigError("--db_volume_path", "not allowed with --db_volume_id")
    for name in ("db_volume_id", "db_volume_path"):
        if name in given:
            if not given[name].strip():
                raise ConfigError(f"--{name}", "must not be empty")
            values[name] = given[name]
            other = "db_volume_path" if name == "db_volume_id" else "db_volume_id"
            values[other] = None  # the two are exclusive: setting one clears the other
    if "advert_int" in given:
        try:
            seconds = float(given["advert_int"])
            format_advert_int(seconds)
        except (ValueError, ConfigError):
            raise ConfigError(
                "--advert_int", "must be seconds, a multiple of 0.01 between 0.01 and 40.95"
            ) from None
        values["advert_int"] = seconds
    if "gateway_ip" in given:
        values["gateway_ip"] = _ip_flag("--gateway_ip", given["gateway_ip"])
    if "route" in given:
        routes = []
        for text in given["route"]:
            try:
                routes.append(Route.parse(text))
            except ValueError as exc:
                raise ConfigError("--route", _message(exc)) from None
        values["routes"] = tuple(routes)
    return values


def _ifname_flag(flag: str, text: str) -> str:
    try:
        return check_ifname(text)
    except ValueError as exc:
        raise ConfigError(flag, str(exc)) from None


def _bgp_values(given: Mapping[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name in ("local_ip", "anycast_ip", "remote_ip"):
        if name in given:
            values[name] = _ip_flag(f"--{name}", given[name])
    for name in ("local_as", "remote_as"):
        if name in given:
            values[name] = _int_flag(f"--{name}", given[name], 1, 4294967295)
    if "local_router_id" in given:
        text = given["local_router_id"]
        try:
            values["local_router_id"] = ipaddress.IPv4Address(text)
        except ValueError:
            raise ConfigError(
                "--local_router_id", f"{text!r} is not an IPv4 address (a router id is 32 bits)"
            ) from None
    if "md5" in given:
        values["md5"] = given["md5"]  # checked by the schema; its messages never quote it
    return values


# ---------------------------------------------------------------------------------------------
# sections, schema, host checks


def _load_or_default(paths: NodePaths, host: HostFacts) -> EscConfig:
    if paths.config_file.exists():
        try:
            return load_config(paths.config_file)
        except ConfigError as exc:
            where = "" if exc.field == str(paths.config_file) else f"{paths.config_file}: "
            raise ConfigError(
                f"{where}{exc.field}", f"{exc.message} (fix the file first)"
            ) from None
    return EscConfig(node_name=node_name_from(host.hostname()))


def node_name_from(hostname: str) -> str:
    """A schema-valid node name from a host name: first label, odd characters -> '-'."""
    label = hostname.split(".", 1)[0]
    name = re.sub(r"[^A-Za-z0-9_.\-]", "-", label)[:63].lstrip("_.-")
    return name or "esc"


def _section_base(
    old: HaConfig | BgpConfig | None,
    given: Mapping[str, Any],
    required: Sequence[str],
    first_flag: str,
    what: str,
) -> dict[str, Any]:
    present = [n for n in required if n in given]
    if present:
        missing = [n for n in required if n not in given]
        if missing:
            others = ", ".join(f"--{n}" for n in required if n != missing[0])
            raise ConfigError(f"--{missing[0]}", f"required together with {others}")
        return {}  # rebuild the section from the flags
    if old is None:
        names = ", ".join(f"--{n}" for n in required)
        raise ConfigError(first_flag, f"no {what} configured yet: {names} are required")
    return dict(old)  # update the existing section with the flags given


def _flag_for(field_name: str, message: str, section: str) -> tuple[str, str]:
    """Translate a schema location (``ha.kad_vri``) into a flag (``--kad_vri``)."""
    parts = field_name.split(".")
    names = HaConfig.model_fields if section == "ha" else BgpConfig.model_fields
    if parts[0] == section and len(parts) > 1 and parts[1] in names:
        name = parts[1]
    elif parts[0] in names:
        name = parts[0]
    else:
        found = sorted((message.find(n), n) for n in names if re.search(rf"\b{n}\b", message))
        if not found:
            return field_name, message
        name = found[0][1]
    message = message.removeprefix(f"{name}: ")
    return f"--{_FLAG_OF_FIELD.get(name, name)}", message


def _translate_error(exc: ConfigError, section: str) -> ConfigError:
    if exc.field.startswith("--"):
        return exc
    flag, message = _flag_for(exc.field, exc.message, section)
    return ConfigError(flag, message)


def _translate(render: Callable[[], object], section: str) -> None:
    try:
        render()
    except ConfigError as exc:
        raise _translate_error(exc, section) from None


def _validated_section(model: type[M], data: dict[str, Any], section: str) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _translate_error(config_error(exc, (section,)), section) from None


def _whole(old: EscConfig, section: str, value: HaConfig | BgpConfig) -> EscConfig:
    """The new whole config, validated through the schema and checked to load back equal."""
    data = dict(old)
    data[section] = value
    try:
        new = EscConfig.model_validate(data)
    except ValidationError as exc:
        raise _translate_error(config_error(exc), section) from None
    reloaded = parse_config(tomllib.loads(dump_config(new)))
    if reloaded != new:
        raise ConfigError(section, "does not survive a save and load (a bug: please report)")
    return new


def _owner(addrs: Mapping[str, list[IPInterface]], addr: IPAddress) -> list[str]:
    return [name for name, ifs in addrs.items() if any(i.ip == addr for i in ifs)]


def _check_ha_host(ha: HaConfig, addrs: Mapping[str, list[IPInterface]]) -> IPAddress:
    """Host checks for ``ha set``; returns the node address this host owns."""
    for flag, name in (("--kad_vif", ha.kad_vif), ("--kad_vip", ha.vip_iface)):
        if name not in addrs:
            raise ConfigError(flag, f"no interface {name} on this host")
    for route in ha.routes:
        if route.iface not in addrs:
            raise ConfigError("--route", f"no interface {route.iface} on this host")
    a, b = ha.ha_node_list
    owned = [n for n in (a, b) if _owner(addrs, n)]
    if not owned:
        raise ConfigError("--ha_node_list", f"this host owns neither {a} nor {b}")
    if len(owned) == 2:
        raise ConfigError("--ha_node_list", f"this host owns both {a} and {b}")
    self_addr = owned[0]
    if ha.kad_vif not in _owner(addrs, self_addr):
        where = ", ".join(_owner(addrs, self_addr))
        raise ConfigError("--kad_vif", f"{self_addr} is on {where}, not on {ha.kad_vif}")
    vip = ha.kad_vip.address
    elsewhere = [name for name in _owner(addrs, vip) if name != ha.vip_iface]
    if elsewhere:  # on the VIP's own interface it may simply be held by keepalived right now
        raise ConfigError("--kad_vip", f"{vip} is already an address of {', '.join(elsewhere)}")
    subnets = [
        i.network
        for i in addrs[ha.vip_iface]
        if i.version == vip.version and i.ip != vip and vip in i.network
    ]
    if not subnets:
        if _owner(addrs, vip):
            raise ConfigError(
                "--kad_vip", f"{vip} is an address of {ha.vip_iface} itself, not a free address"
            )
        raise ConfigError("--kad_vip", f"{vip} is in no subnet of {ha.vip_iface}")
    for net in subnets:
        which = subnet_own(vip, net)
        if which is not None:
            raise ConfigError("--kad_vip", f"{vip} is the {which} address of {net}")
    return self_addr


def _check_bgp_host(bgp: BgpConfig, addrs: Mapping[str, list[IPInterface]]) -> None:
    if not _owner(addrs, bgp.local_ip):
        raise ConfigError("--local_ip", f"{bgp.local_ip} is not an address of this host")


# ---------------------------------------------------------------------------------------------
# output


def _scrub(text: str, secret: str | None) -> str:
    return text.replace(secret, MASK) if secret else text


def _fail(exc: ConfigError, secret: str | None = None) -> int:
    print(f"escadm: {_scrub(str(exc), secret)}", file=sys.stderr)
    return EXIT_INVALID


def _show(key: str, value: object) -> str:
    if value is None or value == []:
        return "(unset)"
    if key.rsplit(".", 1)[-1] in _SECRETS:
        return MASK if value else "(empty)"
    if isinstance(value, list):
        return " ".join(_show(key, v) for v in value)
    if isinstance(value, dict) and {"dest", "gateway", "iface"} <= value.keys():
        gw = value["gateway"]
        if ":" in str(gw):
            return f"[{value['dest']}]:[{gw}]:{value['iface']}"
        return f"{value['dest']}:{gw}:{value['iface']}"
    return str(value)


def _flat(data: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def diff_lines(old: EscConfig, new: EscConfig) -> list[str]:
    """``field: old → new`` for every changed field, secrets masked."""
    a = _flat(old.model_dump(mode="json"), "")
    b = _flat(new.model_dump(mode="json"), "")
    lines = []
    for key in sorted(a.keys() | b.keys()):
        if a.get(key) == b.get(key):
            continue
        old_text, new_text = _show(key, a.get(key)), _show(key, b.get(key))
        if old_text == new_text == MASK:
            new_text = f"{MASK} (changed)"
        elif old_text == new_text:
            continue
        lines.append(f"{key}: {old_text} → {new_text}")
    return lines


def _commit(old: EscConfig, new: EscConfig, section: str, paths: NodePaths) -> int:
    generated = False
    if section == "ha":
        new, generated = generate_missing(new)
    lines = diff_lines(old, new)
    if not lines and paths.config_file.exists():
        print(f"no change to {section} in {paths.config_file}")
        return EXIT_OK
    try:
        save_config(new, paths.config_file)
    except OSError as exc:
        print(f"escadm: {paths.config_file}: cannot write: {exc.strerror}", file=sys.stderr)
        return EXIT_FAILED
    print(f"updated {paths.config_file}:")
    for line in lines:
        print(f"  {line}")
    if generated:
        print("generated the pair's shared secrets; give the peer the same ones:")
        print("  escadm ha secrets export | ssh PEER escadm ha secrets import")
    print("run `escadm reload` to apply")
    return EXIT_OK
