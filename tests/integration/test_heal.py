"""Issue 14, part A: all traffic between the two nodes cut while the northbound client still
reaches both, then healed, with a writer through the VIP all along.

The standby promotes (a new timeline) while the old primary, alone, drops it from synchronous
replication after the grace. On the heal both are VRRP masters for a moment; the old primary has
the higher configured priority (101), and before the data rank it won the election back and
acknowledged writes for a few hundred milliseconds on the history about to be rewound (13 of
14,165 acknowledged writes lost over 10 rounds). With the rank, the new primary outranks it and
keeps the VIP. Repeated, because the window is short.
"""

from __future__ import annotations

import time

import pytest
from labutil import eventually

from esclab import faults, scenarios
from esclab.lab import Lab
from esclab.orchestrate import WriterRun, check

pytestmark = pytest.mark.integration
ROUNDS = 20


def partition_and_heal(lab: Lab, w: WriterRun, i: int) -> None:
    health = scenarios.wait_healthy(lab, 180)
    assert health.ok, (i, health.why_not)
    old, new = health.master, health.backup
    assert old is not None and new is not None
    faults.partition(lab, lab.topology().sync_network, "all")
    eventually(lambda: lab.node_state(new) == "MASTER", 60, 0.05, f"{new} promoted")
    # the old primary's grace runs out too: it would acknowledge alone if it had traffic
    eventually(
        lambda: (scenarios.agent_status(lab, old) or {}).get("peer_outdated_from") is not None,
        60,
        0.1,
        f"{old} asynchronous",
    )
    w.wait_acks(len(w.acks) + 10, timeout=60)  # served by the new primary
    faults.heal(lab)
    health = scenarios.wait_healthy(lab, 180)
    assert health.ok, (i, health.why_not)
    assert health.master == new, (i, f"{old} won the election back")
    w.wait_acks(len(w.acks) + 10, timeout=60)


def test_heal_after_a_full_partition_loses_no_acknowledged_write(pair: Lab) -> None:
    w = WriterRun(pair, f"heal-{int(time.time())}").start()
    try:
        w.wait_acks(20)
        for i in range(ROUNDS):
            partition_and_heal(pair, w, i)
    finally:
        w.stop()
    result = check(pair, w)
    assert result["acked"] > 0, result
    assert result["lost"] == 0, result
    assert result["duplicated"] == 0, result
