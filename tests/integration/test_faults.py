"""The fault matrix through the VIP, with a northbound writer running: every fault ends with
exactly one serving primary, every acknowledged write present, no write executed twice.
Outcomes only; the write gaps are measured by bench/failover.py."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

import pytest
from labutil import NODES, eventually, vip_holders, wait_pair

from esc.lab import faults
from esc.lab.lab import LAB_VIP, Lab
from esc.lab.orchestrate import WriterRun, check

pytestmark = pytest.mark.integration
VIP = LAB_VIP["single"]


def _kill_all(lab: Lab, host: str) -> None:
    faults.signal_component(lab, host, "all", signal.SIGKILL)


def _kill(component: str) -> Callable[[Lab, str], None]:
    return lambda lab, host: faults.signal_component(lab, host, component, signal.SIGKILL) and None


def _link_down(lab: Lab, host: str) -> None:
    faults.link(lab, host, "sync", up=False)


def _pause_all(lab: Lab, host: str) -> None:
    faults.signal_component(lab, host, "all", signal.SIGSTOP)


FAULTS: dict[str, Callable[[Lab, str], None]] = {
    "kill-node": _kill_all,
    "kill-keepalived": _kill("keepalived"),
    "kill-postgres": _kill("postgres"),
    "kill-manager": _kill("manager"),
    "link-down": _link_down,
    "pause-node": _pause_all,
}


def _serving_nodes(lab: Lab) -> list[str]:
    return [h for h in NODES if lab.node_state(h) == "MASTER" and lab.agent_alive(h)]


@pytest.mark.parametrize("fault", list(FAULTS))
def test_fault_keeps_every_acknowledged_write(
    fault: str, healthy: tuple[str, str], pair: Lab
) -> None:
    master, _ = healthy
    w = WriterRun(pair, f"{fault}-{int(time.time())}").start()
    try:
        w.wait_acks(30)
        t_fault = time.time()
        FAULTS[fault](pair, master)
        # Writes go on through the VIP (after a failover, or on the same node).
        eventually(
            lambda: any(a.t_ack > t_fault for a in w.acks),
            90,
            what="a write acknowledged after the fault",
        )
        faults.heal(pair)  # undo link/pause; killed nodes are booted again below
        if not pair.agent_alive(master):
            faults.reboot(pair, master)
        wait_pair(pair, 180)
        n = len(w.acks)
        w.wait_acks(n + 20, 60)  # the healed pair serves
    finally:
        w.stop()
    eventually(lambda: len(_serving_nodes(pair)) == 1, 60, what="exactly one serving primary")
    eventually(lambda: len(vip_holders(pair, VIP)) == 1, 60, what="one VIP holder")
    result = check(pair, w)
    assert result["acked"] > 50
    assert result["lost"] == 0, result
    assert result["duplicated"] == 0, result
