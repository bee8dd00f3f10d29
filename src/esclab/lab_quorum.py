"""Quorum mode in the lab (``escadm lab up --quorum etcd``): the pair CA and each host's
certificate (what ``escadm ha pki`` is for on real hosts), the witness host's root and config,
and its ``esc-witness`` process in the ``witness`` namespace.

The witness's files live under ``<lab>/witness`` (its ESC_ROOT): the same config as the nodes
(``ha.witness`` is its own address), its certificate, its etcd data and logs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from esc import pki
from esc.config.schema import EscConfig, NodePaths, save_config
from esclab.run import in_ns
from esclab.topology import NODES, WITNESS, Topology


def witness_paths(lab_root: Path) -> NodePaths:
    return NodePaths(lab_root / WITNESS)


def quorum_fields(topo: Topology) -> dict[str, str]:
    """What `escadm ha set --quorum etcd --witness IP` adds to the [ha] section."""
    return {"quorum": "etcd", "witness": str(topo.address(WITNESS, topo.sync_network).ip)}


def install_pki(lab_root: Path, topo: Topology, roots: dict[str, NodePaths]) -> None:
    """A CA for the lab's pair, and each host's certificate for its sync address in its
    ``<etc>/pki`` (``ca.crt``, ``host.crt``, ``host.key`` 0600). The CA's key stays in the
    lab's directory, as it would stay with the operator."""
    ca = pki.create_ca(lab_root / "pki" / "ca")
    for host, paths in roots.items():
        addr = topo.address(host, topo.sync_network).ip
        issued = pki.issue(ca, lab_root / "pki" / "hosts", host, [str(addr)])
        d = paths.pki_dir
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        shutil.copyfile(ca.cert, d / "ca.crt")
        shutil.copyfile(issued.cert, d / "host.crt")
        fd = os.open(d / "host.key", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(issued.key.read_bytes())


def configure_witness(lab_root: Path, cfg: EscConfig) -> None:
    """The witness's config: the pair's own (any node's; node_name aside, they are equal)."""
    save_config(cfg.model_copy(update={"node_name": WITNESS}), witness_paths(lab_root).config_file)


def boot_witness(lab_root: Path) -> int:
    """Start esc-witness in the witness namespace; its pid."""
    paths = witness_paths(lab_root)
    paths.log_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, ESC_ROOT=str(paths.root))
    witness = str(Path(sys.executable).parent / "esc-witness")
    with open(paths.log_dir / "esc_witness.stdout", "ab") as log:
        proc = subprocess.Popen(
            in_ns(WITNESS, witness),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
        )
    return proc.pid


def pki_roots(lab_root: Path, node_paths: dict[str, NodePaths]) -> dict[str, NodePaths]:
    return {**{n: node_paths[n] for n in NODES}, WITNESS: witness_paths(lab_root)}
