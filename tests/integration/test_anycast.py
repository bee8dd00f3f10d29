"""BGP anycast in the lab: the primary announces the anycast address through ExaBGP to the
router's BIRD; nb reaches the northbound API through it before and after a failover and a
switchover; a node that is not MASTER never announces, even when its agent is killed.
Outcomes only; the anycast failover time is measured by bench/."""

from __future__ import annotations

import json
import re
import signal

import pytest
from labutil import NODES, api_code_from_nb, escadm, eventually, in_host, wait_pair

from esclab import faults, scenarios
from esclab.lab import LAB_ANYCAST, Lab

pytestmark = pytest.mark.integration
PREFIX = f"{LAB_ANYCAST}/32"


def other(host: str) -> str:
    return NODES[1 - NODES.index(host)]


def routes_via(lab: Lab) -> list[str]:
    """The nodes the router's table reaches the anycast address through."""
    sock = str(lab.root / "router" / "bird.ctl")
    out = in_host("router", "birdc", "-s", sock, "show", "route", PREFIX).stdout
    addrs = re.findall(r"via (\S+) on", out)
    by_addr = {
        str(lab.topology().address(n, lab.topology().northbound_network).ip): n for n in NODES
    }
    return [by_addr.get(a, a) for a in addrs]


def api_via_anycast(lab: Lab) -> int:
    return api_code_from_nb(lab, f"https://{LAB_ANYCAST}:8443/v0/tenants")


def announcing(lab: Lab, host: str) -> dict[str, object] | None:
    """(state, announced) from one published status of ``host``'s agent."""
    res = escadm(host, lab, "status", "--json", timeout=10)
    try:
        st = json.loads(res.stdout)
    except ValueError:
        return None
    return {"state": st.get("state"), "announced": st.get("announced")}


def never_announces_unless_master(lab: Lab) -> None:
    for host in NODES:
        snap = announcing(lab, host)
        if snap is not None and snap["announced"]:
            assert snap["state"] == "MASTER", (host, snap)


def test_primary_alone_announces_and_nb_reaches_the_api(
    healthy: tuple[str, str], pair: Lab
) -> None:
    master, _ = healthy
    assert eventually(lambda: routes_via(pair) == [master], 60, what="route via the primary")
    assert eventually(lambda: api_via_anycast(pair) == 200, 30, what="API via anycast")
    never_announces_unless_master(pair)


def test_failover_moves_the_route(healthy: tuple[str, str], pair: Lab) -> None:
    master, backup = healthy
    eventually(lambda: routes_via(pair) == [master], 60, what="route via the primary")
    scenarios.SCENARIOS["kill-node"](pair, master)
    eventually(lambda: routes_via(pair) == [backup], 60, what="route via the new primary")
    assert eventually(lambda: api_via_anycast(pair) == 200, 30, what="API after failover")
    scenarios.restore(pair, master)
    wait_pair(pair)
    assert routes_via(pair) == [backup]
    never_announces_unless_master(pair)


def test_switchover_moves_the_route_and_only_master_announces(
    healthy: tuple[str, str], pair: Lab
) -> None:
    master, backup = healthy
    eventually(lambda: routes_via(pair) == [master], 60, what="route via the primary")
    res = escadm(master, pair, "ha", "switchover")
    assert res.returncode == 0, res.stdout + res.stderr
    for _ in range(40):  # sample while the roles move
        never_announces_unless_master(pair)
        assert len(routes_via(pair)) <= 1
    eventually(lambda: routes_via(pair) == [backup], 60, what="route via the new primary")
    assert eventually(lambda: api_via_anycast(pair) == 200, 30, what="API after switchover")


def test_killed_agent_drops_the_session_and_the_standby_announces(
    healthy: tuple[str, str], pair: Lab
) -> None:
    master, backup = healthy
    eventually(lambda: routes_via(pair) == [master], 60, what="route via the primary")
    faults.signal_component(pair, master, "agent", signal.SIGKILL)
    eventually(lambda: routes_via(pair) == [backup], 60, what="route via the standby")
    assert not faults.component_pids(master, "exabgp")  # died with its agent
    scenarios.restore(pair, master)
    wait_pair(pair)
