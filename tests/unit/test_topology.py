import ipaddress

import pytest

from esc.addresses import is_allowed
from esc.errors import LabError
from esclab.faults import loss_rules, partition_rules
from esclab.topology import build_topology


@pytest.mark.parametrize("kind", ["single", "multi"])
def test_every_address_is_documentation_range_and_names_fit(kind: str) -> None:
    topo = build_topology(kind)  # type: ignore[arg-type]
    for att in topo.attachments:
        assert all(is_allowed(a.ip) for a in att.addresses)
        assert len(att.switch_port) <= 15
    assert set(topo.hosts) == {"esc-ha-0", "esc-ha-1", "nb", "router", "witness"}
    # the witness: on the sync network only, where both nodes' etcd members reach it
    assert [a.network for a in topo.of_host("witness")] == ["sync"]
    assert topo.address("witness", "sync").ip == ipaddress.ip_address("192.0.2.30")


def test_multi_has_three_networks_and_nb_only_on_northbound() -> None:
    topo = build_topology("multi")
    assert [n.name for n in topo.networks] == ["northbound", "sync", "mgmt", "vnf"]
    assert [a.network for a in topo.of_host("nb")] == ["northbound"]
    assert topo.address("esc-ha-0", "sync").ip == ipaddress.ip_address("192.0.2.10")
    assert topo.address("esc-ha-1", "northbound", 6).ip == ipaddress.ip_address("2001:db8:100::11")
    with pytest.raises(LabError, match="not on network"):
        topo.attachment("nb", "sync")
    with pytest.raises(LabError, match="no network"):
        topo.network("storage")


@pytest.mark.parametrize("kind", ["single", "multi"])
def test_both_nodes_and_only_they_are_on_the_ipv6_vnf_network(kind: str) -> None:
    topo = build_topology(kind)  # type: ignore[arg-type]
    assert topo.network("vnf").v4 is None
    on_vnf = {a.host: a.addresses for a in topo.attachments if a.network == "vnf"}
    assert set(on_vnf) == {"esc-ha-0", "esc-ha-1"}
    assert topo.address("esc-ha-1", "vnf", 6).ip == ipaddress.ip_address("2001:db8:200::11")
    assert all(a.version == 6 for addrs in on_vnf.values() for a in addrs)


def test_unknown_topology_names_the_flag() -> None:
    with pytest.raises(LabError, match="--topology"):
        build_topology("triple")  # type: ignore[arg-type]


def test_partition_vrrp_only_drops_protocol_112_both_ways_for_both_families() -> None:
    rules = partition_rules(build_topology("single"), "sync", "vrrp")
    ha0 = rules["esc-ha-0"]
    assert "iifname eth0 ip saddr 192.0.2.11 meta l4proto 112 counter drop" in ha0
    assert "oifname eth0 ip6 daddr 2001:db8::11 meta l4proto 112 counter drop" in ha0
    assert "5432" not in ha0
    assert "saddr 192.0.2.10" in rules["esc-ha-1"]


def test_partition_db_drops_both_directions_of_the_port() -> None:
    ha1 = partition_rules(build_topology("multi"), "sync", "db")["esc-ha-1"]
    assert "iifname eth1 ip saddr 192.0.2.10 tcp dport 5432 counter drop" in ha1
    assert "iifname eth1 ip saddr 192.0.2.10 tcp sport 5432 counter drop" in ha1


def test_loss_rules() -> None:
    assert "numgen random mod 10000 < 150 counter drop" in loss_rules("eth0", 1.5)
    assert "oifname eth0 counter drop" in loss_rules("eth0", 100)
