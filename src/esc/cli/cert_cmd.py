"""``escadm cert``: this node's certificates from the pair CA, shown and rotated live.

    escadm cert show [--json]   # each certificate: subject, names, expiry, issuer check
    escadm cert rotate          # a new key and certificate for replication and the API

``rotate`` needs the pair CA's key on this node (two-node mode; in quorum mode the key stays
with the operator and `escadm ha pki create` + `install` replace the files instead). It issues a
new ``host.crt`` (replication) and ``api.crt`` (the northbound API, for the VIP, the anycast
address and both nodes), then applies them without a role change: PostgreSQL is told to reload
(new replication connections present the new certificate; the streaming one carries on), and
escmanager's listeners pick the new API certificate up within seconds (``CertWatch``). The peer
needs nothing: it checks certificates against the same CA.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from esc import pki
from esc.agent.main import own_address  # the agent's own rule for "which node am I"
from esc.config.schema import EscConfig, NodePaths, load_config
from esc.drivers.postgres import PostgresDriver
from esc.drivers.proc import run
from esc.errors import ConfigError, EscError
from esc.host import HostFacts
from esc.manager.tls import pair_addresses, pair_certificate

FILES = ("ca.crt", "host.crt", "api.crt")


def add_cert_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cp = sub.add_parser("cert", help="this node's certificates (pair CA): show, rotate")
    cs = cp.add_subparsers(dest="cert_cmd", required=True, metavar="COMMAND")
    show = cs.add_parser(
        "show", help="each certificate's names and expiry", epilog="example: escadm cert show"
    )
    show.add_argument("--json", action="store_true")
    cs.add_parser(
        "rotate",
        help="new certificates from the pair CA, applied live (no role change)",
        epilog="example: escadm cert rotate",
    )


def describe(path: Path, ca: Path) -> dict[str, Any]:
    """One certificate's subject, names, end date and whether the pair CA signed it."""
    if not path.is_file():
        return {"file": str(path), "present": False}
    out = run(
        ["openssl", "x509", "-in", str(path), "-noout", "-subject", "-enddate", "-ext",
         "subjectAltName"],
        check=False,
    ).stdout  # fmt: skip
    lines = [ln.strip() for ln in out.splitlines() if ln.strip()]
    subject = next(
        (ln.removeprefix("subject=").strip() for ln in lines if ln.startswith("subject=")), ""
    )
    end = next((ln.removeprefix("notAfter=") for ln in lines if ln.startswith("notAfter=")), "")
    names = [ln for ln in lines if ln.startswith(("DNS:", "IP Address:"))]
    signed = run(["openssl", "verify", "-CAfile", str(ca), str(path)], check=False).returncode == 0
    return {
        "file": str(path),
        "present": True,
        "subject": subject,
        "names": ", ".join(names),
        "not_after": end,
        "signed_by_pair_ca": signed,
    }


def rotate(cfg: EscConfig, paths: NodePaths, own: str, node_name: str) -> list[str]:
    """Issue the node's two certificates anew (ConfigError naming what is missing); the files
    written."""
    d = paths.pki_dir
    if cfg.ha is None or cfg.ha.ha_mode == "no_ha":
        raise ConfigError("ha", "no HA pair configured: no pair certificates to rotate")
    if not (d / "ca.crt").is_file() or not (d / "ca.key").is_file():
        raise ConfigError(
            "pki",
            f"the pair CA's key is not on this node ({d / 'ca.key'}): in quorum mode make new "
            "files with `escadm ha pki create` and install them with `escadm ha pki install`",
        )
    host = pki.issue_into(d, "host", [own], cn=node_name)
    api = pair_certificate(paths, cfg, renew=True)
    assert api is not None  # the CA and the pair's addresses are there
    return [str(host.cert), str(api.cert)]


def _show(cfg: EscConfig, paths: NodePaths, as_json: bool) -> None:
    ca = paths.pki_dir / "ca.crt"
    shown = [describe(paths.pki_dir / f, ca) for f in FILES]
    if as_json:
        print(json.dumps({"pki_dir": str(paths.pki_dir), "certificates": shown}))
        return
    for c in shown:
        if not c["present"]:
            print(f"{c['file']}: absent")
            continue
        ok = "signed by the pair CA" if c["signed_by_pair_ca"] else "NOT signed by ca.crt"
        print(f"{c['file']}: {c['subject']}; {c['names']}; until {c['not_after']}; {ok}")
    print(f"the API certificate must name: {', '.join(pair_addresses(cfg)) or '(no pair)'}")


def _rotate(cfg: EscConfig, paths: NodePaths, host: HostFacts) -> None:
    if cfg.ha is None or cfg.ha.ha_mode == "no_ha":
        raise ConfigError("ha", "no HA pair configured: no pair certificates to rotate")
    idx, addr, _ = own_address(cfg, host)
    for f in rotate(cfg, paths, str(addr), cfg.ha.node_names[idx]):
        print(f"issued {f}")
    if cfg.ha.ha_mode != "cinder":
        PostgresDriver.from_config(cfg, paths, self_addr=str(addr)).refresh_access()
        print("PostgreSQL reloaded: new replication connections use the new certificate")
    print("escmanager serves the new API certificate to new connections within seconds")


def run_cert(args: argparse.Namespace, paths: NodePaths, host: HostFacts) -> int:
    try:
        cfg = load_config(paths.config_file)
        if args.cert_cmd == "show":
            _show(cfg, paths, args.json)
        else:
            _rotate(cfg, paths, host)
        return 0
    except (EscError, OSError) as exc:
        print(f"escadm: {exc}", file=sys.stderr)
        return 2
