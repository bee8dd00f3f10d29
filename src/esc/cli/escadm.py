"""escadm: configure and run the ESC-HA pair (seed-compatible argument names)."""

from __future__ import annotations

import argparse
import sys

from esc.cli.lab_cmd import add_lab_parser, run_lab


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="escadm",
        description="Operate an ESC-HA pair: HA and BGP config, reload, status, switchover, logs.",
    )
    sub = parser.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    add_lab_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.cmd == "lab":
        return run_lab(args)
    parser.error(f"unknown command {args.cmd}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
