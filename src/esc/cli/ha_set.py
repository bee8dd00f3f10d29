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
  It need not be on the command line (where ``ps`` shows it to every user): ``--md5-file PATH``
  (the file's first line; a file others may read is refused), ``--md5 -`` (a line on standard
  input) or ``--md5`` alone (a prompt, twice). The guide's ``--md5 SECRET`` still works, with
  a warning.

Section semantics: when the identifying flags are given (``--ha_node_list --kad_vip --kad_vif``
for ``ha set``, the six address/AS flags for ``bgp set``) the section is rebuilt from the flags;
when none of them is given, the other flags update the existing section.
"""

from __future__ import annotations

import argparse
import getpass
import re
import stat
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
MD5_PROMPT = "\0prompt"  # `--md5` given alone (no secret can hold a NUL)
MD5_STDIN = "-"
MD5_ON_ARGV_WARNING = (
    "escadm: warning: --md5 SECRET is visible to every user of this host (ps, /proc) and in "
    "the shell's history; give it with --md5-file PATH, --md5 - (standard input) or --md5 "
    "alone (a prompt)"
)

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
    p.add_argument(
        "--md5",
        nargs="?",
        const=MD5_PROMPT,
        metavar="SECRET|-",
        help="TCP MD5 password (never printed): alone, a prompt; '-', a line on standard input; "
        "SECRET on the command line is visible in ps (a warning)",
    )
    p.add_argument(
        "--md5-file",
        metavar="PATH",
        help="read the TCP MD5 password from the file's first line (mode 0600 or 0400)",
    )
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
    secret: str | None = None
    try:
        old = _load_or_default(paths, host)
        secret = md5_secret(args)
        given = _given(args, BGP_FLAGS)
        if secret is not None:
            given["md5"] = secret
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


def md5_secret(args: argparse.Namespace) -> str | None:
    """The MD5 password ``bgp set`` was given, from wherever it was given (None: not given).
    Only where it comes from is checked here (a ConfigError naming the flag); the schema checks
    the value (naming ``--md5``, never quoting it)."""
    given, path = getattr(args, "md5", None), getattr(args, "md5_file", None)
    if given is not None and path is not None:
        raise ConfigError("--md5-file", "give the password one way: --md5 or --md5-file")
    if path is not None:
        return _md5_of_file(Path(path))
    if given == MD5_STDIN:
        line = sys.stdin.readline()
        if not line.strip("\r\n"):
            raise ConfigError("--md5", "'-' reads the password from standard input: none there")
        return line.removesuffix("\n")
    if given == MD5_PROMPT:
        try:
            first = getpass.getpass("BGP MD5 password: ")
            again = getpass.getpass("again: ")
        except (EOFError, KeyboardInterrupt):
            raise ConfigError("--md5", "no password entered") from None
        if first != again:
            raise ConfigError("--md5", "the two entries differ")
        if not first:
            raise ConfigError("--md5", "no password entered")
        return first
    if given is not None:
        print(MD5_ON_ARGV_WARNING, file=sys.stderr)
    return given if isinstance(given, str) else None


def _md5_of_file(path: Path) -> str:
    """The first line of ``path``, a regular file only its owner may read or write."""
    flag = "--md5-file"
    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(flag, f"{path}: not a regular file")
        if st.st_mode & 0o077:
            raise ConfigError(
                flag,
                f"{path}: others may access it (mode {stat.S_IMODE(st.st_mode):04o}); "
                f"chmod 600 {path}",
            )
        with path.open(encoding="utf-8", newline="") as f:
            line = f.readline()
    except FileNotFoundError:
        raise ConfigError(flag, f"{path}: no such file") from None
    except UnicodeDecodeError:
        raise ConfigError(flag, f"{path}: not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(flag, f"{path}: cannot read: {exc.strerror}") from None
    secret = line.removesuffix("\n")
    if not secret:
        raise ConfigError(flag, f"{path}: empty (the password is its first line)")
    return secret


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
