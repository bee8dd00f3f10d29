"""The pair's shared secrets: the peer-API secret and the replication password.

Both nodes must hold the same two values. `escadm ha set` generates them on the node where
they are missing; `escadm ha secrets export` prints them as one opaque line, and
`escadm ha secrets import` (reading that line on standard input) writes them into the peer's
config. Neither value is ever printed otherwise or logged.
"""

from __future__ import annotations

import argparse
import base64
import json
import secrets
import sys

from esc.config.schema import EscConfig, NodePaths, load_config, parse_config, save_config
from esc.errors import ConfigError, EscError

PREFIX = "esc-pair-secrets:"


def generate_missing(cfg: EscConfig) -> tuple[EscConfig, bool]:
    """Fill an empty peer secret or replication password with fresh random values."""
    data = cfg.model_dump(mode="json")
    changed = False
    if not cfg.agent.peer_secret:
        data["agent"]["peer_secret"] = secrets.token_urlsafe(32)
        changed = True
    if not cfg.replication.password:
        data["replication"]["password"] = secrets.token_urlsafe(24)
        changed = True
    return (parse_config(data), True) if changed else (cfg, False)


def export_line(cfg: EscConfig) -> str:
    if not cfg.agent.peer_secret or not cfg.replication.password:
        raise ConfigError("secrets", "none to export yet (run `escadm ha set` first)")
    payload = {"peer_secret": cfg.agent.peer_secret, "password": cfg.replication.password}
    return PREFIX + base64.urlsafe_b64encode(json.dumps(payload).encode()).decode()


def import_line(cfg: EscConfig, line: str) -> EscConfig:
    line = line.strip()
    if not line.startswith(PREFIX):
        raise ConfigError("secrets", f"not an export line (it starts with {PREFIX!r})")
    try:
        payload = json.loads(base64.urlsafe_b64decode(line[len(PREFIX) :]))
        peer_secret, password = str(payload["peer_secret"]), str(payload["password"])
    except (ValueError, KeyError, TypeError):
        raise ConfigError("secrets", "the export line is damaged") from None
    data = cfg.model_dump(mode="json")
    data["agent"]["peer_secret"] = peer_secret
    data["replication"]["password"] = password
    return parse_config(data)


def add_secrets_parser(ha: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sp = ha.add_parser(
        "secrets",
        help="copy the pair's shared secrets to the peer",
        epilog="example: escadm ha secrets export | ssh PEER escadm ha secrets import",
    )
    sub = sp.add_subparsers(dest="secrets_cmd", required=True, metavar="COMMAND")
    sub.add_parser("export", help="print the secrets as one line (for `import` on the peer)")
    sub.add_parser("import", help="read an export line on standard input and store it")


def run_secrets(args: argparse.Namespace, paths: NodePaths) -> int:
    try:
        cfg = load_config(paths.config_file)
        if args.secrets_cmd == "export":
            print(export_line(cfg))
            return 0
        save_config(import_line(cfg, sys.stdin.readline()), paths.config_file)
        print(
            f"stored the pair's secrets in {paths.config_file}; run `escadm reload` or "
            "restart the agent"
        )
        return 0
    except EscError as exc:
        print(f"escadm: {exc}", file=sys.stderr)
        return 2
