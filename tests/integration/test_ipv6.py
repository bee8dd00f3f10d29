"""IPv6 heartbeats (single topology, ``ha_node_list`` IPv6: VRRP, replication and the peer API
over IPv6, IPv6 VIP) and the seed's three networks (multi topology: an IPv6 northbound VIP on
its own interface over IPv4 heartbeats on the sync network, ``--route`` applied). nb reaches
the API through the VIP before and after a failover. Outcomes only."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from labutil import (
    NODES,
    api_code_from_nb,
    escadm,
    eventually,
    holds_address,
    in_host,
    psql,
    save_artifacts,
)

from esclab import scenarios
from esclab.lab import Lab, lab_vip

pytestmark = pytest.mark.integration


def other(host: str) -> str:
    return NODES[1 - NODES.index(host)]


def api_code(lab: Lab, vip: str) -> int:
    return api_code_from_nb(lab, f"https://[{vip}]:8443/v0/tenants")


def pair_up(lab: Lab) -> tuple[str, str]:
    eventually(lab.pair_ready, 180, what="pair")
    master = eventually(lab.master, 60, what="a master")
    return master, other(master)


def failover_keeps_data_and_vip(lab: Lab, vip: str) -> None:
    master, backup = pair_up(lab)
    assert eventually(lambda: holds_address(master, vip), 30, what="VIP on the master")
    assert eventually(lambda: api_code(lab, vip) == 200, 60, what="API through the VIP")
    psql(lab, master, "CREATE TABLE IF NOT EXISTS v6 (x int); INSERT INTO v6 VALUES (6)")
    scenarios.SCENARIOS["kill-node"](lab, master)
    eventually(lambda: lab.master() == backup, 60, what=f"{backup} MASTER")
    assert eventually(lambda: holds_address(backup, vip), 30, what="VIP moved")
    assert eventually(lambda: api_code(lab, vip) == 200, 60, what="API after failover")
    assert "6" in psql(lab, backup, "SELECT x FROM v6").stdout
    scenarios.restore(lab, master)
    assert pair_up(lab) == (backup, master)


@pytest.fixture
def lab_of(request: pytest.FixtureRequest) -> Iterator[Lab]:
    lab = Lab()
    lab.down()
    try:
        yield lab
    finally:
        save_artifacts(lab, request.node.name)
        lab.down()


def test_ipv6_heartbeats_fail_over(lab_of: Lab) -> None:
    lab_of.up("single", heartbeat=6)
    conf = (lab_of.node_paths(NODES[0]).run_dir / "keepalived.conf").read_text()
    assert "unicast_src_ip 2001:db8::10" in conf and "2001:db8::11" in conf
    # replication streams over IPv6
    master, _ = pair_up(lab_of)
    sql = "SELECT client_addr FROM pg_stat_replication"
    assert eventually(
        lambda: "2001:db8::" in psql(lab_of, master, sql).stdout, 60, what="replication over IPv6"
    )
    failover_keeps_data_and_vip(lab_of, lab_vip("single", 6))


def test_three_networks_ipv6_vip_over_ipv4_heartbeats_and_routes(lab_of: Lab) -> None:
    lab_of.up("multi")
    vip = lab_vip("multi")
    master, _ = pair_up(lab_of)
    conf = (lab_of.node_paths(master).run_dir / "keepalived.conf").read_text()
    assert "interface eth1" in conf and "native_ipv6" in conf and f"{vip}/64 dev eth0" in conf
    failover_keeps_data_and_vip(lab_of, vip)
    # --route: applied by reload and kept by a second one
    route = "2001:db8:300::/64"
    for host in NODES:
        res = escadm(host, lab_of, "ha", "set", "--route", f"[{route}]:[2001:db8:100::1]:eth0")
        assert res.returncode == 0, res.stdout + res.stderr
        assert escadm(host, lab_of, "reload").returncode == 0
        assert route in in_host(host, "ip", "-6", "route", "show", route).stdout
        assert escadm(host, lab_of, "reload").returncode == 0
        assert route in in_host(host, "ip", "-6", "route", "show", route).stdout
    assert pair_up(lab_of)  # no role change needed
