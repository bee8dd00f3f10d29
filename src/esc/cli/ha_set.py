"""``escadm ha set``, ``escadm bgp set`` and ``escadm config validate``: seed-compatible flags.

Rules:

- Every error goes to stderr as ``escadm: --FLAG: message`` with exit code 2, and the config file
  stays byte-for-byte unchanged: nothing is written until the whole new config has passed the
  schema, the host checks and a dry render of keepalived/ExaBGP config.
- escadm holds no value rule: each flag's text goes to its schema field (``config_flags.py``),
  and the schema parses and checks it. A schema error names a dotted field (``ha.kad_vri``),
  which the same table turns back into the flag (``--kad_vri``).
- Facts about this host (interfaces and their addresses) come through :class:`HostFacts`, with a
  real implementation reading ``ip -j addr show`` and :class:`FakeHostFacts` for tests; the
  checks against them are ``host_checks.py``.
- The BGP MD5 secret is never echoed: the diff prints ``******`` and no error message quotes it.

Section semantics: when the identifying flags are given (``--ha_node_list --kad_vip --kad_vif``
for ``ha set``, the six address/AS flags for ``bgp set``) the section is rebuilt from the flags;
when none of them is given, the other flags update the existing section.
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar, get_args

from pydantic import BaseModel, ValidationError

from esc.cli.config_diff import diff_lines, scrub
from esc.cli.config_flags import (
    BGP_FLAGS,
    BGP_REQUIRED,
    HA_FLAGS,
    HA_REQUIRED,
    as_flag_error,
    section_values,
)
from esc.cli.host_checks import check_bgp_host, check_ha_host
from esc.cli.secrets_cmd import generate_missing
from esc.config.schema import (
    BgpConfig,
    EscConfig,
    HaConfig,
    HaMode,
    NodePaths,
    config_error,
    dump_config,
    load_config,
    parse_config,
    save_config,
)
from esc.drivers.exabgp_conf import render_exabgp
from esc.drivers.keepalived_conf import render_keepalived
from esc.errors import ConfigError, EscError
from esc.host import HostFacts

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INVALID = 2

_PLACEHOLDER_SCRIPT = Path("/usr/libexec/esc/esc-agent-alive")  # dry render only

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
    p.add_argument(
        "--quorum", metavar="none|etcd", help="etcd: quorum mode with a witness (--witness)"
    )
    p.add_argument("--witness", metavar="IP", help="the witness host's address (quorum etcd)")
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
        base = _section_base(old.ha, given, HA_REQUIRED, "--ha_node_list", "HA")
        new_ha = _validated(HaConfig, {**base, **section_values(given)}, ("ha",))
        new = _whole(old, "ha", new_ha)
        self_addr = check_ha_host(new_ha, host.addresses())
        render_keepalived(new, self_addr, paths, _PLACEHOLDER_SCRIPT)
    except ConfigError as exc:
        return _fail(as_flag_error(exc))
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
        base = _section_base(old.bgp, given, BGP_REQUIRED, "--local_ip", "BGP")
        new_bgp = _validated(BgpConfig, {**base, **section_values(given)}, ("bgp",))
        new = _whole(old, "bgp", new_bgp)
        check_bgp_host(new_bgp, host.addresses())
        render_exabgp(new, ["/bin/true"])
    except ConfigError as exc:
        return _fail(as_flag_error(exc), secret)
    except EscError as exc:
        print(f"escadm: {scrub(str(exc), secret)}", file=sys.stderr)
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
        print(f"escadm: {where}{exc}", file=sys.stderr)
        return EXIT_INVALID
    print(f"OK: {path}")
    return EXIT_OK


# ---------------------------------------------------------------------------------------------
# flags, sections, schema


def _given(args: argparse.Namespace, names: Sequence[str]) -> dict[str, Any]:
    """The flags actually given, as typed."""
    return {name: value for name in names if (value := getattr(args, name, None)) is not None}


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


def _validated(model: type[M], data: dict[str, Any], where: tuple[str, ...]) -> M:
    """``data`` as ``model``, found at ``where`` in the config; errors name the dotted field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise config_error(exc, where) from None


def _whole(old: EscConfig, section: str, value: HaConfig | BgpConfig) -> EscConfig:
    """The new whole config, validated through the schema and checked to load back equal."""
    new = _validated(EscConfig, {**dict(old), section: value}, ())
    reloaded = parse_config(tomllib.loads(dump_config(new)))
    if reloaded != new:
        raise ConfigError(section, "does not survive a save and load (a bug: please report)")
    return new


# ---------------------------------------------------------------------------------------------
# output


def _fail(exc: ConfigError, secret: str | None = None) -> int:
    print(f"escadm: {scrub(str(exc), secret)}", file=sys.stderr)
    return EXIT_INVALID


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
