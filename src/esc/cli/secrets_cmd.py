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

from esc import pki
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


def export_line(cfg: EscConfig, ca: tuple[str, str] | None = None) -> str:
    """The secrets, and the pair CA (certificate and key, PEM) when given."""
    if not cfg.agent.peer_secret or not cfg.replication.password:
        raise ConfigError("secrets", "none to export yet (run `escadm ha set` first)")
    payload = {"peer_secret": cfg.agent.peer_secret, "password": cfg.replication.password}
    if ca is not None:
        payload["ca_crt"], payload["ca_key"] = ca
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


def ca_of_line(line: str) -> tuple[str, str] | None:
    """The pair CA an export line carries (two-node mode), checked; None if it has none."""
    try:
        payload = json.loads(base64.urlsafe_b64decode(line.strip()[len(PREFIX) :]))
    except ValueError:
        raise ConfigError("secrets", "the export line is damaged") from None
    if not isinstance(payload, dict) or "ca_crt" not in payload:
        return None
    cert, key = payload.get("ca_crt"), payload.get("ca_key")
    if not isinstance(cert, str) or not isinstance(key, str):
        raise ConfigError("secrets", "the export line's CA is damaged")
    pki.check_ca_pem(cert, key)
    return cert, key


def pair_ca(cfg: EscConfig, paths: NodePaths) -> tuple[str, str] | None:
    """Two-node mode: this node's pair CA (made now if it has none), for the peer. Quorum mode
    and the shared-volume mode carry none (`escadm ha pki`, or no replication)."""
    if cfg.ha is None or cfg.ha.quorum == "etcd" or cfg.ha.ha_mode in ("cinder", "no_ha"):
        return None
    pki.create_ca(paths.pki_dir)
    return pki.read_ca(paths.pki_dir)


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
            print(export_line(cfg, pair_ca(cfg, paths)))
            return 0
        line = sys.stdin.readline()
        new = import_line(cfg, line)
        ca = ca_of_line(line)  # both checked before anything is written
        save_config(new, paths.config_file)
        print(f"stored the pair's secrets in {paths.config_file}")
        if ca is not None and pki.install_ca(paths.pki_dir, *ca):
            print(
                f"installed the pair CA in {paths.pki_dir}; a running agent must be restarted "
                "(systemctl restart esc_service) to issue this node's certificate from it"
            )
        print("run `escadm reload` or restart the agent")
        return 0
    except EscError as exc:
        print(f"escadm: {exc}", file=sys.stderr)
        return 2
