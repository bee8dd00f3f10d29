"""``escadm ha pki``: the certificates of a pair in quorum mode (etcd's mutual TLS).

    escadm ha pki create DIR     # once, on any host with the pair's config
    escadm ha pki install DIR/<host>   # on each host, with that host's directory copied there

``create`` makes the pair CA (``DIR/ca``: keep its key with the operator, never on the hosts)
and a certificate for each of the three etcd members, named and addressed as the config says
(the two nodes at their ``ha_node_list`` address, the witness at ``ha.witness``).
``install`` puts one host's three files into ``<etc>/pki`` (the key 0600).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from esc import pki
from esc.agent.quorum_setup import cluster
from esc.config.schema import NodePaths, load_config
from esc.errors import EscError


def add_pki_parser(ha: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sp = ha.add_parser("pki", help="quorum mode: the pair CA and each host's certificate")
    sub = sp.add_subparsers(dest="pki_cmd", required=True, metavar="COMMAND")
    c = sub.add_parser("create", help="make the CA and the three hosts' certificates in DIR")
    c.add_argument("dir", metavar="DIR")
    i = sub.add_parser("install", help="install one host's files (DIR/<host>) in <etc>/pki")
    i.add_argument("dir", metavar="DIR")


def run_pki(args: argparse.Namespace, paths: NodePaths) -> int:
    try:
        if args.pki_cmd == "create":
            members = cluster(load_config(paths.config_file))
            made = pki.create_pair(Path(args.dir), {m.name: [m.address] for m in members})
            for name, d in made.items():
                print(f"{name}: {d} (copy it to {name}, then `escadm ha pki install DIR`)")
            print(f"the CA's key: {Path(args.dir) / 'ca' / 'ca.key'} (keep it off the hosts)")
            return 0
        pki.install_host(Path(args.dir), paths.pki_dir)
        print(f"installed in {paths.pki_dir}; start or restart the agent (or esc-witness)")
        return 0
    except (EscError, OSError) as exc:
        print(f"escadm: {exc}", file=sys.stderr)
        return 2
