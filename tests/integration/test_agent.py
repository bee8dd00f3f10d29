"""The HA agent with real keepalived and PostgreSQL in the lab: roles, VIP, failover, safety.

Outcomes only (who is MASTER, who holds the VIP, what the database says); timings belong to
bench/. Every wait polls with a generous deadline.
"""

from __future__ import annotations

import json
import time

import pytest
from labutil import (
    NODES,
    escadm,
    eventually,
    holds_address,
    in_host,
    mac_of,
    nb_sees_vip_at,
    psql,
    states,
    vip_holders,
    wait_pair,
)

from esclab import faults, lab_prometheus
from esclab.lab import Lab

pytestmark = pytest.mark.integration
VIP = "192.0.2.100"


def other(host: str) -> str:
    return NODES[1 - NODES.index(host)]


def test_cold_start_one_master_holding_vip_one_backup(healthy: tuple[str, str], pair: Lab) -> None:
    master, backup = healthy
    eventually(lambda: vip_holders(pair, VIP) == [master], 30, what="VIP on the master only")
    assert nb_sees_vip_at(VIP) == mac_of(master)
    eventually(lambda: psql(pair, backup, "select pg_is_in_recovery()").stdout.strip() == "t", 30)
    # A committed row is readable on the standby (synchronous replication).
    psql(pair, master, "create table if not exists t_cold (v int); insert into t_cold values (1)")
    assert psql(pair, backup, "select count(*) from t_cold").stdout.strip() == "1"
    st = json.loads(escadm(master, pair, "status", "--json").stdout)
    assert st["state"] == "MASTER" and st["role"] == "primary" and st["vip_held"] is True
    assert st["db"]["sync_standby"] == backup
    assert escadm(backup, pair, "status").returncode == 0
    hs = json.loads(escadm(backup, pair, "ha", "status", "--json").stdout)
    assert hs["peer"]["state"] == "MASTER" and hs["state"] == "BACKUP"


def test_kill_everything_on_master_fails_over(healthy: tuple[str, str], pair: Lab) -> None:
    master, backup = healthy
    psql(pair, master, "create table if not exists t_kill (v int); insert into t_kill values (7)")
    faults.signal_component(pair, master, "all", faults.signal.SIGKILL)
    eventually(lambda: states(pair)[backup] == "MASTER", 60, what=f"{backup} MASTER")
    assert holds_address(backup, VIP)
    eventually(lambda: nb_sees_vip_at(VIP) == mac_of(backup), 30, what="client follows the VIP")
    assert psql(pair, backup, "select count(*) from t_kill where v = 7").stdout.strip() != "0"
    # The old master boots again and rejoins as the standby (rewound), with the data.
    faults.reboot(pair, master)
    assert wait_pair(pair) == (backup, master)
    eventually(lambda: psql(pair, master, "select pg_is_in_recovery()").stdout.strip() == "t", 60)


def test_kill_keepalived_alone_removes_vip_then_one_master(
    healthy: tuple[str, str], pair: Lab
) -> None:
    master, _ = healthy
    pids = faults.component_pids(master, "keepalived")
    faults.signal_component(pair, master, "keepalived", faults.signal.SIGKILL)
    # A killed keepalived leaves the VIP behind; the agent removes it, deactivates the
    # service, then restarts keepalived. Either node may then win the election.
    eventually(lambda: not holds_address(master, VIP), 30, what="VIP removed from old master")
    eventually(
        lambda: set(faults.component_pids(master, "keepalived")) - set(pids),
        30,
        what="keepalived restarted",
    )
    new_master, _ = wait_pair(pair)
    eventually(lambda: vip_holders(pair, VIP) == [new_master], 30, what="VIP on the master only")
    assert _serving(pair) == 1


def test_sigstop_sigcont_keepalived_at_most_one_serves(healthy: tuple[str, str], pair: Lab) -> None:
    master, backup = healthy
    faults.signal_component(pair, master, "keepalived", faults.signal.SIGSTOP)
    try:
        # The agent's peer view says the master still serves: the standby does not take over.
        eventually(
            lambda: (
                "holding" in _reason(pair, backup)
                or "still serves" in _reason(pair, backup)
                or states(pair)[backup] == "MASTER"
            ),
            60,
        )
    finally:
        faults.signal_component(pair, master, "keepalived", faults.signal.SIGCONT)
    eventually(lambda: _serving(pair) == 1, 30, what="exactly one node serving")
    wait_pair(pair)
    eventually(lambda: len(vip_holders(pair, VIP)) == 1, 30, what="one VIP holder")


def _reason(lab: Lab, host: str) -> str:
    res = escadm(host, lab, "status", "--json")
    try:
        return str(json.loads(res.stdout).get("reason", ""))
    except ValueError:
        return ""


def _serving(lab: Lab) -> int:
    n = 0
    for host in NODES:
        res = escadm(host, lab, "status", "--json")
        try:
            st = json.loads(res.stdout)
        except ValueError:
            continue
        n += bool(st.get("service", {}).get("active"))
    return n


def test_switchover_both_ways(healthy: tuple[str, str], pair: Lab) -> None:
    master, backup = healthy
    refused = escadm(backup, pair, "ha", "switchover")
    assert refused.returncode != 0 and "not MASTER" in refused.stdout
    for _ in range(2):
        psql(pair, master, "create table if not exists t_sw (v int); insert into t_sw values (1)")
        res = escadm(master, pair, "ha", "switchover", "--wait", "60")
        assert res.returncode == 0, res.stdout + res.stderr
        assert wait_pair(pair) == (backup, master)
        eventually(lambda m=backup: vip_holders(pair, VIP) == [m], 30, what="VIP moved")
        master, backup = backup, master
    assert psql(pair, master, "select count(*) from t_sw").stdout.strip() == "2"


def test_service_failure_fails_over(healthy: tuple[str, str], pair: Lab) -> None:
    master, backup = healthy
    faults.signal_component(pair, master, "manager", faults.signal.SIGSTOP)
    try:
        eventually(lambda: states(pair)[backup] == "MASTER", 90, what=f"{backup} MASTER")
        assert not holds_address(master, VIP) or states(pair)[master] != "MASTER"
    finally:
        faults.signal_component(pair, master, "manager", faults.signal.SIGCONT)
    assert wait_pair(pair) == (backup, master)


def test_cold_start_with_peer_absent_waits_then_pairs(healthy: tuple[str, str], pair: Lab) -> None:
    # Power-cut both, boot one: it waits in SWITCHING without the VIP until the peer appears.
    for host in NODES:
        faults.signal_component(pair, host, "all", faults.signal.SIGKILL)
    alone, later = NODES
    faults.reboot(pair, alone)
    eventually(lambda: "cold boot" in _reason(pair, alone), 60, what="waiting for the peer")
    # Its database runs (so it is not waiting on itself), yet it holds nothing.
    assert states(pair)[alone] == "SWITCHING"
    assert psql(pair, alone, "select 1").stdout.strip() == "1"
    assert not holds_address(alone, VIP)
    assert _serving(pair) == 0
    faults.reboot(pair, later)
    wait_pair(pair)
    eventually(lambda: len(vip_holders(pair, VIP)) == 1, 30, what="one VIP holder")


def test_agent_killed_the_node_loses_the_vip(healthy: tuple[str, str], pair: Lab) -> None:
    master, backup = healthy
    faults.signal_component(pair, master, "agent", faults.signal.SIGKILL)
    # keepalived dies with its agent (parent-death signal): the VIP goes, the peer takes over.
    eventually(lambda: not holds_address(master, VIP), 30, what="VIP gone with the agent")
    eventually(lambda: states(pair)[backup] == "MASTER", 60, what=f"{backup} MASTER")
    eventually(lambda: vip_holders(pair, VIP) == [backup], 30, what="VIP on the new master")
    faults.reboot(pair, master)
    assert wait_pair(pair) == (backup, master)


def test_agent_hung_the_node_loses_the_vip(healthy: tuple[str, str], pair: Lab) -> None:
    master, backup = healthy
    faults.signal_component(pair, master, "agent", faults.signal.SIGSTOP)
    try:
        # Its heartbeat goes stale: keepalived's check fails, the VIP is released.
        eventually(lambda: not holds_address(master, VIP), 30, what="VIP released")
        eventually(lambda: states(pair)[backup] == "MASTER", 60, what=f"{backup} MASTER")
    finally:
        faults.signal_component(pair, master, "agent", faults.signal.SIGCONT)
    # Resumed, it finds a primary with newer data and follows it.
    assert wait_pair(pair) == (backup, master)
    eventually(lambda: vip_holders(pair, VIP) == [backup], 30, what="one VIP holder")


def test_reload_changes_advert_int_without_failover(healthy: tuple[str, str], pair: Lab) -> None:
    master, backup = healthy
    before = len(json.loads(escadm(master, pair, "ha", "history", "--json").stdout))
    for host in (backup, master):
        res = escadm(host, pair, "ha", "set", "--advert_int", "0.3")
        assert res.returncode == 0, res.stderr
        res = escadm(host, pair, "reload")
        assert res.returncode == 0, res.stdout + res.stderr
        assert "keepalived.conf" in res.stdout
        conf = (pair.node_paths(host).run_dir / "keepalived.conf").read_text()
        assert "advert_int 0.3" in conf
    # A change that cannot be applied live is refused, naming it, and changes nothing.
    assert escadm(master, pair, "ha", "set", "--kad_vri", "77").returncode == 0
    res = escadm(master, pair, "reload")
    assert res.returncode != 0 and "ha.kad_vri" in res.stderr
    assert (
        "virtual_router_id 100" in (pair.node_paths(master).run_dir / "keepalived.conf").read_text()
    )
    assert escadm(master, pair, "ha", "set", "--kad_vri", "100").returncode == 0
    assert escadm(master, pair, "reload").returncode == 0
    assert wait_pair(pair) == (master, backup)
    history = json.loads(escadm(master, pair, "ha", "history", "--json").stdout)[before:]
    assert [h["to"] for h in history if h["from"] != h["to"]] == []  # no role change
    assert any(h["reason"] == "config reloaded" for h in history)


def test_status_agrees_with_state_file_and_peer(healthy: tuple[str, str], pair: Lab) -> None:
    """`escadm status` on each node, its state file, and `escadm ha status` on the other node
    tell one story; exit codes say "serving as expected" on both."""
    master, backup = healthy
    for host in (master, backup):
        peer_host = other(host)
        res = escadm(host, pair, "status", "--json")
        assert res.returncode == 0, res.stdout + res.stderr
        own = json.loads(res.stdout)
        state_file = (pair.node_paths(host).state_file).read_text().strip()
        assert own["state"] == state_file == ("MASTER" if host == master else "BACKUP")
        res = escadm(peer_host, pair, "ha", "status", "--json")
        assert res.returncode == 0, res.stdout + res.stderr
        seen = json.loads(res.stdout)["peer"]
        assert seen["reachable"] and seen["state"] == own["state"]
        assert seen["db_role"] == own["db"]["role"]
        assert seen["timeline"] == own["db"]["timeline"]
        assert seen["vip_held"] == own["vip_held"] == (host == master)
        human = escadm(host, pair, "status")
        assert human.returncode == 0 and human.stdout.split()[0] == own["state"]
    table = escadm(master, pair, "ha", "status").stdout
    assert "replay lag" in table and master in table and backup in table


def _monitor_code(pair: Lab, host: str, path: str) -> int:
    """The status nb gets from ``host``'s monitoring listener, verified against the pair CA
    (the certificate names the node's own address, which nb dials)."""
    ca = pair.node_paths(host).pki_dir / "ca.crt"
    url = json.loads(escadm(host, pair, "status", "--json").stdout)["endpoints"][path.strip("/")]
    res = in_host(
        "nb", "curl", "-s", "-m", "5", "--cacert", str(ca), "-o", "/dev/null",
        "-w", "%{http_code}", url,
    )  # fmt: skip
    return int(res.stdout or 0)


def test_health_endpoints_and_prometheus_follow_a_switchover(
    healthy: tuple[str, str], pair: Lab
) -> None:
    """/primary is 200 only on the serving node and /replica only on the in-sync standby,
    over HTTPS with the pair's certificate; the lab's real Prometheus, scraping both agents,
    sees the role flip after a switchover."""
    master, backup = healthy
    st = json.loads(escadm(master, pair, "status", "--json").stdout)
    assert set(st["endpoints"]) >= {
        "primary", "replica", "health", "liveness", "readiness", "metrics",
    }  # fmt: skip

    def codes(host: str) -> tuple[int, ...]:
        return tuple(_monitor_code(pair, host, p) for p in ("primary", "replica", "readiness"))

    eventually(lambda: codes(master) == (200, 503, 200), 30, what=f"{master} /primary 200")
    eventually(lambda: codes(backup) == (503, 200, 200), 30, what=f"{backup} /replica 200")
    targets = eventually(
        lambda: set(lab_prometheus.targets_up().values()) == {"up"} and lab_prometheus.targets_up(),
        60,
        what="prometheus scraping both agents",
    )
    assert set(targets) == {f"agent-{n}" for n in NODES}
    lab_prometheus.wait_values("esc_node_serving", {master: 1, backup: 0})
    lab_prometheus.wait_values("esc_node_role", {master: 3, backup: 2})
    before = lab_prometheus.values("esc_takeovers_total")  # since each agent started

    res = escadm(master, pair, "ha", "switchover", "--wait", "60")
    assert res.returncode == 0, res.stdout + res.stderr
    assert wait_pair(pair) == (backup, master)
    lab_prometheus.wait_values("esc_node_serving", {master: 0, backup: 1})
    lab_prometheus.wait_values("esc_node_role", {master: 2, backup: 3})
    lab_prometheus.wait_values(
        "esc_takeovers_total", {master: before[master], backup: before[backup] + 1}
    )
    took = lab_prometheus.values("esc_last_takeover_duration_seconds")[backup]
    assert 0 < took < 60
    eventually(lambda: codes(backup) == (200, 503, 200), 30, what=f"{backup} /primary 200")
    eventually(lambda: codes(master) == (503, 200, 200), 30, what=f"{master} /replica 200")


def test_pause_holds_off_a_failover_until_resume(healthy: tuple[str, str], pair: Lab) -> None:
    """Maintenance mode is pair-wide: paused on the primary, the standby knows it too and does
    not take over when the primary's node dies; resumed, it takes over."""
    master, backup = healthy

    def paused(host: str) -> bool:
        res = escadm(host, pair, "status", "--json")
        return res.returncode in (0, 1) and bool(json.loads(res.stdout).get("paused"))

    res = escadm(master, pair, "ha", "pause")
    assert res.returncode == 0, res.stdout + res.stderr
    try:
        eventually(lambda: paused(master) and paused(backup), 30, what="both nodes paused")
        faults.signal_component(pair, master, "all", faults.signal.SIGKILL)
        # The standby would take over within a couple of seconds unpaused (bench/failover.py):
        # for ten times that it stays BACKUP, its reason saying why.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            assert states(pair)[backup] == "BACKUP", states(pair)
            time.sleep(0.2)
        st = json.loads(escadm(backup, pair, "status", "--json").stdout)
        assert st["paused"] is True and st["state"] == "BACKUP"
    finally:
        res = escadm(backup, pair, "ha", "resume")
    assert res.returncode == 0, res.stdout + res.stderr
    eventually(lambda: states(pair)[backup] == "MASTER", 60, what=f"{backup} MASTER after resume")
    assert not paused(backup)
