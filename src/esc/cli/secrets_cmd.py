"""The pair's shared secrets: the peer-API secret and the replication password.

Both nodes must hold the same two values. `escadm ha set` generates them on the node where
they are missing; `escadm ha secrets export` prints them as one opaque line, and
`escadm ha secrets import` (reading that line on standard input) writes them into the peer's
config. Neither value is ever printed otherwise or logged.

The line holds exactly what export writes, and import checks it field by field (the two
secrets in the format :func:`generate_missing` makes them, the pair CA as PEM) before it
writes anything; export applies the same check to this node's values, so a hand-set weak
secret is refused where it is, never copied to the peer.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import re
import secrets
import sys
from typing import Any

from esc import pki
from esc.config.schema import EscConfig, NodePaths, load_config, parse_config, save_config
from esc.errors import ConfigError, EscError

PREFIX = "esc-pair-secrets:"
# The two secrets as generate_missing makes them: token_urlsafe(n) is n random bytes in base64url
# without padding (43 characters for 32 bytes, 32 for 24). Longer is accepted, shorter not, and
# standard base64 too (`openssl rand -base64 32`, as docs/operations.md suggests for a new one).
SECRET_BYTES = {"agent.peer_secret": 32, "replication.password": 24}
_BASE64 = re.compile(r"[A-Za-z0-9_+/=-]+")
_MAX_SECRET = 256
_LINE_KEYS = {"peer_secret", "password"}
_CA_KEYS = {"ca_crt", "ca_key"}
# One PEM block as openssl writes it: base64 in lines of 64 characters, the last one shorter.
_PEM = re.compile(
    r"-----BEGIN (?P<label>[A-Z ]+)-----\n"
    r"(?P<body>(?:[A-Za-z0-9+/]{64}\n)*[A-Za-z0-9+/]{1,63}={0,2}\n|(?:[A-Za-z0-9+/]{64}\n)+)"
    r"-----END (?P=label)-----\n"
)


def check_secret(field: str, value: object) -> str:
    """``value`` if it has the generated format of the secret ``field``; else a ConfigError
    naming the field (never quoting the value: it is a secret)."""
    need = len(secrets.token_urlsafe(SECRET_BYTES[field]))
    if not isinstance(value, str) or not value:
        raise ConfigError(field, "missing or empty")
    if not (need <= len(value) <= _MAX_SECRET and _BASE64.fullmatch(value)):
        raise ConfigError(
            field,
            f"not in the generated format: {need}-{_MAX_SECRET} characters of base64 "
            "(A-Z a-z 0-9 - _ + / =) "
            "(clear it on the node that holds it and run `escadm ha set` to generate one)",
        )
    return value


def check_pem(field: str, value: object, label: str) -> str:
    """``value`` if it is one PEM block ``label`` in openssl's shape, its base64 valid."""
    m = _PEM.fullmatch(value) if isinstance(value, str) else None
    if m is None or m["label"] != label:
        raise ConfigError(field, f"not one PEM {label.lower()} (-----BEGIN {label}-----)")
    try:
        der = base64.b64decode(m["body"].replace("\n", ""), validate=True)
    except binascii.Error:
        raise ConfigError(field, f"the PEM {label.lower()}'s base64 is damaged") from None
    if len(der) < 32:
        raise ConfigError(field, f"too short for a PEM {label.lower()}")
    return m.string


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
    payload = {
        "peer_secret": check_secret("agent.peer_secret", cfg.agent.peer_secret),
        "password": check_secret("replication.password", cfg.replication.password),
    }
    if ca is not None:
        payload["ca_crt"] = check_pem("secrets.ca_crt", ca[0], "CERTIFICATE")
        payload["ca_key"] = check_pem("secrets.ca_key", ca[1], "PRIVATE KEY")
    return PREFIX + base64.urlsafe_b64encode(json.dumps(payload).encode()).decode()


def _payload(line: str) -> dict[str, Any]:
    """The export line's fields: exactly those export writes, or a ConfigError."""
    line = line.strip()
    if not line.startswith(PREFIX):
        raise ConfigError("secrets", f"not an export line (it starts with {PREFIX!r})")
    try:
        payload = json.loads(base64.urlsafe_b64decode(line[len(PREFIX) :]))
    except (ValueError, TypeError):
        raise ConfigError("secrets", "the export line is damaged") from None
    if not isinstance(payload, dict):
        raise ConfigError("secrets", "the export line is damaged")
    keys = set(payload)
    if keys != _LINE_KEYS and keys != _LINE_KEYS | _CA_KEYS:
        missing = sorted((_LINE_KEYS | (_CA_KEYS if keys & _CA_KEYS else set())) - keys)
        unknown = sorted(keys - _LINE_KEYS - _CA_KEYS)
        what = "; ".join(
            [*([f"no {', '.join(missing)}"] if missing else []), *(f"unknown {k}" for k in unknown)]
        )
        raise ConfigError("secrets", f"the export line is damaged ({what})")
    return payload


def import_line(cfg: EscConfig, line: str) -> EscConfig:
    """``cfg`` with the secrets of an export line, each checked (:func:`check_secret`)."""
    payload = _payload(line)
    data = cfg.model_dump(mode="json")
    data["agent"]["peer_secret"] = check_secret("agent.peer_secret", payload["peer_secret"])
    data["replication"]["password"] = check_secret("replication.password", payload["password"])
    return parse_config(data)


def ca_of_line(line: str) -> tuple[str, str] | None:
    """The pair CA an export line carries (two-node mode), checked; None if it has none."""
    payload = _payload(line)
    if "ca_crt" not in payload:
        return None
    cert = check_pem("secrets.ca_crt", payload["ca_crt"], "CERTIFICATE")
    key = check_pem("secrets.ca_key", payload["ca_key"], "PRIVATE KEY")
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
