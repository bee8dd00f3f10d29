"""The lab's pieces for quorum mode that need no lab: the faults' firewall rules, the probe
that finds two nodes accepting writes at once, the witness's config."""

from __future__ import annotations

from esclab.faults import isolate_rules, partition_rules
from esclab.lab_quorum import quorum_fields
from esclab.orchestrate import Ack, both_accepting
from esclab.topology import build_topology


def test_isolating_a_node_cuts_its_peer_and_the_witness_not_its_clients() -> None:
    topo = build_topology("single")
    script = isolate_rules(topo, "esc-ha-0", "sync", "all")
    assert "saddr 192.0.2.11 counter drop" in script  # the peer
    assert "saddr 192.0.2.30 counter drop" in script  # the witness
    assert "192.0.2.50" not in script and "192.0.2.1 " not in script  # nb and the router
    etcd = isolate_rules(topo, "esc-ha-1", "sync", "etcd")
    assert "daddr 192.0.2.30 tcp dport 2380 counter drop" in etcd
    assert "daddr 192.0.2.10 tcp sport 2379 counter drop" in etcd
    assert "5432" not in etcd and "l4proto 112" not in etcd
    multi = isolate_rules(build_topology("multi"), "esc-ha-0", "sync", "all")
    assert "192.0.2.30" in multi and "iifname eth1" in multi


def test_a_partition_between_the_nodes_leaves_the_witness_reachable() -> None:
    rules = partition_rules(build_topology("single"), "sync", "all")
    assert all("192.0.2.30" not in script for script in rules.values())


def ack(n: int, sent: float, acked: float) -> Ack:
    return Ack(n, acked, 1, 0, sent)


def test_the_probe_finds_two_nodes_accepting_at_once_and_only_then() -> None:
    a = [ack(1, 0.0, 0.1), ack(2, 0.2, 0.3), ack(3, 0.4, 2.0)]  # 3 hangs until 2.0
    b = [ack(10, 3.0, 3.1), ack(11, 3.2, 3.3)]
    assert both_accepting(a, b) == []
    b_early = [ack(12, 1.5, 1.6), *b]  # accepted while a's write 3 was in flight
    assert [(x.n, y.n) for x, y in both_accepting(a, b_early)] == [(3, 12)]
    assert [(x.n, y.n) for x, y in both_accepting(b_early, a)] == [(12, 3)]
    assert both_accepting([], b) == [] and both_accepting(a, []) == []


def test_quorum_mode_names_the_witness_on_the_sync_network() -> None:
    assert quorum_fields(build_topology("single")) == {"quorum": "etcd", "witness": "192.0.2.30"}
