"""Shared by the escadm unit tests: run ``ha set`` / ``bgp set`` as escadm would."""

from __future__ import annotations

from esc.cli.escadm import build_parser, parse_args
from esc.cli.ha_set import run_bgp_set, run_ha_set
from esc.config.schema import NodePaths
from esc.host import HostFacts


def escadm(argv: list[str], paths: NodePaths, host: HostFacts) -> int:
    """What ``escadm`` does with ``argv`` on ``host``: its own parser, these host facts."""
    try:
        args = parse_args(build_parser(), argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    if args.cmd == "ha":
        return run_ha_set(args, paths, host)
    return run_bgp_set(args, paths, host)
