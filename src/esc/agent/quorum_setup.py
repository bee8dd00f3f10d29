"""Quorum mode's parts on one host, from the config: the etcd cluster (both nodes' members and
the witness's), this host's member (a supervised child) and, on a node, the quorum keeper.

The witness host runs the same package in its ``witness`` role (``esc.witness``): its member
only, named ``witness``, at ``ha.witness``.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable

from esc.config.ha import WITNESS_NAME
from esc.config.node import RENEWALS_PER_LEASE
from esc.config.schema import EscConfig, NodePaths
from esc.drivers.etcd import EtcdClient, EtcdMember, Member, Timing, Tls, member_argv
from esc.drivers.quorum import QuorumKeeper
from esc.errors import ConfigError


def cluster(cfg: EscConfig) -> list[Member]:
    """The three members: the nodes (names and addresses in ha_node_list order), the witness."""
    ha, q = cfg.ha, cfg.quorum_cfg
    if ha is None or ha.quorum != "etcd" or ha.witness is None:
        raise ConfigError("ha.quorum", 'quorum mode is not configured (ha.quorum = "etcd")')
    hosts = [*zip(ha.node_names, ha.ha_node_list, strict=True), (WITNESS_NAME, ha.witness)]
    return [Member(name, str(addr), q.client_port, q.peer_port) for name, addr in hosts]


def host_tls(paths: NodePaths) -> Tls:
    """This host's certificates; a missing file refuses the start, naming it."""
    d = paths.pki_dir
    tls = Tls(d / "ca.crt", d / "host.crt", d / "host.key")
    for f in (tls.ca, tls.cert, tls.key):
        if not f.is_file():
            raise ConfigError(
                "quorum",
                f"{f} missing: quorum mode needs this host's certificates "
                "(`escadm ha pki create`, then `escadm ha pki install`)",
            )
    return tls


def cluster_token(cfg: EscConfig) -> str:
    """etcd's initial-cluster-token: the same on the three hosts, another for another pair."""
    assert cfg.ha is not None
    return f"esc-ha-vrid-{cfg.ha.vrid}"


def build_member(cfg: EscConfig, paths: NodePaths, name: str) -> EtcdMember:
    if shutil.which("etcd") is None:  # the package only recommends it
        raise ConfigError("ha.quorum", "quorum mode needs etcd: apt-get install etcd-server")
    members = cluster(cfg)
    me = next((m for m in members if m.name == name), None)
    if me is None:
        raise ConfigError("ha.node_names", f"{name} is not an etcd member")
    q = cfg.quorum_cfg
    argv = member_argv(
        me,
        members,
        paths.etcd_dir,
        host_tls(paths),
        cluster_token(cfg),
        Timing(q.heartbeat_ms, q.election_ms),
    )
    return EtcdMember(argv, paths.etcd_dir, paths.log_dir / "etcd.log")


def build_keeper(
    cfg: EscConfig, paths: NodePaths, name: str, on_change: Callable[[], None]
) -> QuorumKeeper:
    """The keeper of node ``name``: its own member first among the endpoints, each call given
    one renewal interval, an eighth of the lease (a member without a leader holds a call until
    then: it must not use up the time left to renew)."""
    members = cluster(cfg)
    own = [m for m in members if m.name == name]
    others = [m for m in members if m.name != name]
    q = cfg.quorum_cfg
    client = EtcdClient(
        [m.client_url for m in (*own, *others)],
        host_tls(paths),
        timeout=min(1.0, q.lease_ttl_s / RENEWALS_PER_LEASE),
    )
    return QuorumKeeper(
        client,
        name,
        ttl=q.lease_ttl_s,
        margin=q.margin_s,
        on_change=on_change,
        poll_s=min(0.2, cfg.agent.cycle_s),
    )
