"""The fault matrix through the VIP, with a northbound writer running: every fault ends with
exactly one serving primary, every acknowledged write present, no write executed twice.
Outcomes only; the write gaps are measured by bench/failover.py."""

from __future__ import annotations

import time

import pytest
from labutil import NODES, eventually, vip_holders, wait_pair

from esclab.lab import LAB_VIP, Lab
from esclab.orchestrate import WriterRun, check
from esclab.scenarios import SCENARIOS, restore

pytestmark = pytest.mark.integration
VIP = LAB_VIP["single"]


def _serving_nodes(lab: Lab) -> list[str]:
    return [h for h in NODES if lab.node_state(h) == "MASTER" and lab.agent_alive(h)]


@pytest.mark.parametrize("fault", list(SCENARIOS))
def test_fault_keeps_every_acknowledged_write(
    fault: str, healthy: tuple[str, str], pair: Lab
) -> None:
    master, _ = healthy
    w = WriterRun(pair, f"{fault}-{int(time.time())}").start()
    try:
        w.wait_acks(30)
        t_fault = time.time()
        SCENARIOS[fault](pair, master)
        # Writes go on through the VIP (after a failover, or on the same node).
        eventually(
            lambda: any(a.t_ack > t_fault for a in w.acks),
            90,
            what="a write acknowledged after the fault",
        )
        restore(pair, master)
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
