"""escadm: configure and run the ESC-HA pair (seed-compatible argument names)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from esc.cli import agent_cmd
from esc.cli.cert_cmd import add_cert_parser, run_cert
from esc.cli.guide_args import guide_argv
from esc.cli.ha_set import (
    add_bgp_set_parser,
    add_ha_set_parser,
    run_bgp_set,
    run_config_validate,
    run_ha_set,
)
from esc.cli.pki_cmd import add_pki_parser, run_pki
from esc.cli.secrets_cmd import add_secrets_parser, run_secrets
from esc.cli.user_cmd import add_user_parser, run_user
from esc.config.schema import NodePaths
from esc.errors import ConfigError
from esc.host import SystemHostFacts

try:  # the lab ships with the checkout only, never in the product's package
    import esclab.cli as lab_cli
except ImportError:  # pragma: no cover - the installed product
    lab_cli = None  # type: ignore[assignment]

# The ESC install guide's forms (any unicast address works; these are documentation ones).
HA_SET_EXAMPLES = """examples (as in the ESC install guide):
  escadm ha set --ha_node_list 192.0.2.10 192.0.2.11 --kad_vip 192.0.2.254 --kad_vif eth0
  escadm ha set --ha_node_list=192.0.2.10 192.0.2.11 --kad_vip= 192.0.2.254 --kad_vif= eth0
  escadm ha set --ha_node_list=192.0.2.10,192.0.2.11 --kad_vip 198.51.100.254:eth2 \\
      --kad_vif eth0 --kad_vri 77 --gateway_ip 198.51.100.1
  escadm ha set --ha_node_list 2001:db8::10 2001:db8::11 --kad_vip [2001:db8::fc/48]:eth0 \\
      --kad_vif eth0 --route 203.0.113.0/24:192.0.2.1:eth1
then: escadm reload
"""
BGP_SET_EXAMPLES = """example (as in the ESC install guide):
  escadm bgp set --local_ip 192.0.2.10 --anycast_ip 203.0.113.1 --remote_ip 192.0.2.1 \\
      --local_as 65010 --remote_as 65001 --local_router_id 192.0.2.10 [--md5 SECRET]
the MD5 password off the command line (--md5 SECRET is visible in ps: a warning):
  escadm bgp set --md5-file /root/bgp-md5      (its first line; chmod 600)
  escadm bgp set --md5 - < /root/bgp-md5       (a line on standard input)
  escadm bgp set --md5                         (a prompt)
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="escadm",
        description="Operate an ESC-HA pair: HA and BGP config, reload, status, switchover, logs.",
    )
    sub = parser.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    ha = sub.add_parser("ha", help="HA settings, status, history, switchover")
    ha_sub = ha.add_subparsers(dest="ha_cmd", required=True, metavar="COMMAND")
    ha_set = add_ha_set_parser(ha_sub)
    ha_set.formatter_class = argparse.RawDescriptionHelpFormatter
    ha_set.epilog = HA_SET_EXAMPLES
    add_secrets_parser(ha_sub)
    add_pki_parser(ha_sub)
    bgp = sub.add_parser("bgp", help="BGP anycast settings")
    bgp_sub = bgp.add_subparsers(dest="bgp_cmd", required=True, metavar="COMMAND")
    bgp_set = add_bgp_set_parser(bgp_sub)
    bgp_set.formatter_class = argparse.RawDescriptionHelpFormatter
    bgp_set.epilog = BGP_SET_EXAMPLES
    agent_cmd.add_agent_parsers(sub, ha_sub)
    cfg = sub.add_parser("config", help="the config file")
    cfg_sub = cfg.add_subparsers(dest="config_cmd", required=True, metavar="COMMAND")
    val = cfg_sub.add_parser(
        "validate",
        help="check a config file",
        epilog="example: escadm config validate /etc/esc/esc.toml",
    )
    val.add_argument("file", nargs="?")
    add_user_parser(sub)
    add_cert_parser(sub)
    if lab_cli is not None:
        lab_cli.add_lab_parser(sub)
    return parser


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.Namespace:
    """``argv`` parsed, the guide's ``--kad_vip= IP`` forms included (guide_args.py). Exits 2
    naming the option on a bad one, as argparse does."""
    try:
        words = guide_argv(argv)
    except ConfigError as exc:
        parser.exit(2, f"escadm: {exc}\n")
    return parser.parse_args(words)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parse_args(parser, sys.argv[1:] if argv is None else argv)
    paths = NodePaths.from_env()
    cmd = args.cmd
    if cmd == "lab" and lab_cli is not None:
        return lab_cli.run_lab(args)
    if cmd == "status":
        return agent_cmd.run_status(paths, args.json)
    if cmd == "ha":
        if args.ha_cmd == "set":
            return run_ha_set(args, paths, SystemHostFacts())
        if args.ha_cmd == "status":
            return agent_cmd.run_ha_status(paths, args.json, args.watch)
        if args.ha_cmd == "history":
            return agent_cmd.run_history(paths, args.json, args.n)
        if args.ha_cmd == "switchover":
            return agent_cmd.run_switchover(paths, args.wait)
        if args.ha_cmd in ("pause", "resume"):
            return agent_cmd.run_pause(paths, args.ha_cmd == "pause")
        if args.ha_cmd == "force-primary":
            return agent_cmd.run_force_primary(paths, args.yes)
        if args.ha_cmd == "secrets":
            return run_secrets(args, paths)
        if args.ha_cmd == "pki":
            return run_pki(args, paths)
    if cmd == "bgp":
        return run_bgp_set(args, paths, SystemHostFacts())
    if cmd == "config":
        return run_config_validate(Path(args.file) if args.file else paths.config_file)
    if cmd == "reload":
        return agent_cmd.run_reload(paths)
    if cmd == "log":
        return agent_cmd.run_log(paths, args.which, args.follow, args.n)
    if cmd == "user":
        return run_user(args, paths)
    if cmd == "cert":
        return run_cert(args, paths, SystemHostFacts())
    if cmd == "service":
        return agent_cmd.run_service_status(paths, args.json)
    parser.error(f"unknown command {cmd}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
