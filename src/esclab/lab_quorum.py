"""Quorum mode in the lab (``escadm lab up --quorum etcd``): the pair CA and each host's
certificate (what ``escadm ha pki`` is for on real hosts), the witness host's root and config,
and its ``esc-witness`` process in the ``witness`` namespace.

The witness's files live under ``<lab>/witness`` (its ESC_ROOT): the same config as the nodes
(``ha.witness`` is its own address), its certificate, its etcd data and logs.
"""

from __future__ import annotations

from pathlib import Path

from esc import pki
from esc.config.schema import EscConfig, NodePaths, save_config
from esc.drivers.etcd import EtcdMember, Member, Timing, Tls, member_argv
from esclab.machine import free_ports, start_daemon
from esclab.topology import NODES, WITNESS, Topology


def witness_paths(lab_root: Path) -> NodePaths:
    return NodePaths(lab_root / WITNESS)


def quorum_fields(topo: Topology) -> dict[str, str]:
    """What `escadm ha set --quorum etcd --witness IP` adds to the [ha] section."""
    return {"quorum": "etcd", "witness": str(topo.address(WITNESS, topo.sync_network).ip)}


def install_pki(lab_root: Path, topo: Topology, roots: dict[str, NodePaths]) -> None:
    """The pair's certificates as `escadm ha pki create` makes them (the CA's key stays in the
    lab's directory, as it would stay with the operator), each host's installed in its
    ``<etc>/pki`` as `escadm ha pki install` does."""
    sync = topo.sync_network
    hosts = {h: [str(a.ip) for a in topo.attachment(h, sync).addresses] for h in roots}
    made = pki.create_pair(lab_root / "pki", hosts)
    for host, paths in roots.items():
        pki.install_host(made[host], paths.pki_dir)


def configure_witness(lab_root: Path, cfg: EscConfig) -> None:
    """The witness's config: the pair's own (any node's; node_name aside, they are equal)."""
    save_config(cfg.model_copy(update={"node_name": WITNESS}), witness_paths(lab_root).config_file)


def boot_witness(lab_root: Path) -> int:
    """Start esc-witness in the witness namespace; its pid."""
    return start_daemon(WITNESS, witness_paths(lab_root).root, "esc-witness")


def pki_roots(lab_root: Path, node_paths: dict[str, NodePaths]) -> dict[str, NodePaths]:
    return {**{n: node_paths[n] for n in NODES}, WITNESS: witness_paths(lab_root)}


def loopback_cluster(
    root: Path, timing: Timing, token: str
) -> tuple[list[Member], dict[str, EtcdMember], dict[str, Tls]]:
    """Three etcd members on 127.0.0.1 (the two nodes' and the witness's, by port), with a CA
    and certificates of their own under ``root``; not started (each ``EtcdMember`` is a child
    of the caller, stopped by PID). For tests and benchmarks of etcd itself, no lab."""
    ca = pki.create_ca(root / "ca")
    names = (*NODES, WITNESS)
    ports = free_ports(2 * len(names))
    members = [Member(n, "127.0.0.1", ports[2 * i], ports[2 * i + 1]) for i, n in enumerate(names)]
    tls = {}
    for n in names:
        issued = pki.issue(ca, root / "certs", n, ["127.0.0.1"])
        tls[n] = Tls(ca.cert, issued.cert, issued.key)
    procs = {}
    for m in members:
        data = root / m.name / "data"
        argv = member_argv(m, members, data, tls[m.name], token, timing)
        procs[m.name] = EtcdMember(argv, data, root / m.name / "etcd.log")
    return members, procs, tls
