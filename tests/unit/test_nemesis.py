"""The nemesis bench's pure parts: the seeded schedule, the tallies, the pair's health verdict;
and the bench's command line (--help, --dry-run) without a lab."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from esclab.nemesis import (
    BACKGROUND,
    DOUBLE,
    KINDS,
    LOSS_PCT,
    ON_PRIMARY,
    QUORUM_WEIGHTS,
    SEQUENTIAL,
    AloneWindows,
    Fault,
    FaultStep,
    Tally,
    allowed_losses,
    dump_rows,
    dump_tenants,
    history_since,
    mentions,
    parse_weights,
    schedule,
    summarize,
    tally,
    tenant_numbers,
)
from esclab.scenarios import NOT_FAILOVER, SCENARIOS, pair_verdict

BENCH = Path(__file__).resolve().parents[2] / "bench" / "nemesis.py"


# --- the schedule --------------------------------------------------------------------------------


def test_schedule_is_deterministic_per_seed_and_its_prefix_does_not_depend_on_length() -> None:
    assert schedule(7, 200) == schedule(7, 200)
    assert schedule(7, 200) != schedule(8, 200)
    # A failing step k of a long run is replayed by a run of k steps with the same seed.
    assert schedule(7, 40) == schedule(7, 200)[:40]
    assert [s.n for s in schedule(7, 5)] == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("quorum", [False, True])
def test_two_hundred_steps_cover_every_fault_and_stay_in_their_bounds(quorum: bool) -> None:
    steps = schedule(1, 200, QUORUM_WEIGHTS if quorum else None)
    kinds = Counter(s.kind for s in steps)
    expected = set(KINDS) if quorum else set(KINDS) - set(QUORUM_WEIGHTS)
    assert expected <= set(kinds)
    assert quorum or not set(QUORUM_WEIGHTS) & set(kinds)  # two-node mode: never drawn
    assert {DOUBLE, SEQUENTIAL, "kill-node@both"} <= set(kinds)
    for s in steps:
        assert 1 <= len(s.faults) <= 2
        for f in s.faults:
            assert f.target in ("primary", "standby", "both")
            assert (f.loss_pct in LOSS_PCT) if f.kind == "loss" else f.loss_pct == 0
        if len(s.faults) == 1:
            f = s.faults[0]
            spec = KINDS[f.kind]
            assert f.target in dict(spec.targets)
            assert spec.hold[0] <= s.hold_s <= spec.hold[1]
            assert s.gap_s == 0 and not s.settle_first
        assert 0 <= s.boot_gap_s <= 3


def test_double_faults_are_a_sequential_kill_or_a_background_fault_then_the_primary() -> None:
    doubles = [s for s in schedule(1, 300) if len(s.faults) == 2]
    assert doubles
    for s in doubles:
        first, second = s.faults
        assert s.gap_s > 0 and not s.writes_go_on
        if s.kind == SEQUENTIAL:
            # The primary dies, the node that took over dies next; the stale one boots first.
            assert (first, second) == (Fault("kill-node", "primary"), Fault("kill-node", "standby"))
            assert s.settle_first and s.boot_first == "primary" and s.boot_gap_s >= 1
        else:
            assert (first.kind, first.target) in BACKGROUND
            assert second.kind in ON_PRIMARY and second.target == "primary"


def test_both_nodes_killed_at_once_is_a_cold_boot_in_either_order() -> None:
    cold = [s for s in schedule(1, 400) if s.kind == "kill-node@both"]
    assert {s.boot_first for s in cold} == {"primary", "standby"}
    assert not any(s.writes_go_on for s in cold)
    assert all(s.label == "kill-node@both" for s in cold)


def test_writes_are_awaited_only_where_they_survive_the_fault() -> None:
    def step(kind: str, target: Any = "primary") -> FaultStep:
        return FaultStep(1, (Fault(kind, target),), 1.0)

    assert step("kill-node").writes_go_on
    assert step("partition-replication", "both").writes_go_on  # after the grace
    assert not step("kill-node", "both").writes_go_on
    assert not step("pause-node", "standby").writes_go_on  # the grace alone; measured elsewhere


def test_weights_pick_kinds_and_are_checked() -> None:
    only = {k: 0.0 for k in [*KINDS, DOUBLE]} | {"partition-vrrp": 1.0}
    assert {s.kind for s in schedule(3, 50, only)} == {"partition-vrrp"}
    no_doubles = schedule(3, 200, {DOUBLE: 0})
    assert all(len(s.faults) == 1 for s in no_doubles)
    assert schedule(3, 0) == []
    with pytest.raises(ValueError, match="unknown fault kind"):
        schedule(3, 10, {"kill-everything": 1})
    with pytest.raises(ValueError, match="negative"):
        schedule(3, 10, {"loss": -1})
    with pytest.raises(ValueError, match="zero"):
        schedule(3, 10, {k: 0.0 for k in [*KINDS, DOUBLE]})
    with pytest.raises(ValueError, match="negative"):
        schedule(3, -1)


def test_parse_weights() -> None:
    assert parse_weights("kill-node=3, double=0,") == {"kill-node": 3.0, "double": 0.0}
    assert parse_weights("") == {}
    with pytest.raises(ValueError, match="KIND=WEIGHT"):
        parse_weights("kill-node")
    with pytest.raises(ValueError, match="not a number"):
        parse_weights("loss=lots")


def test_labels_and_json() -> None:
    assert Fault("loss", "both", 20.0).label == "loss 20%@both"
    assert Fault("partition-all", "both").label == "partition-all"
    s = FaultStep(
        4,
        (Fault("loss", "both", 5.0), Fault("reboot", "primary")),
        1.5,
        gap_s=2.0,
        settle_first=True,
    )
    assert s.label == "loss 5%@both + reboot@primary"
    out = json.loads(json.dumps(s.to_json()))
    assert out["kind"] == DOUBLE and out["n"] == 4
    assert out["faults"] == [
        {"kind": "loss", "target": "both", "loss_pct": 5.0},
        {"kind": "reboot", "target": "primary"},
    ]


def test_the_replication_partition_is_a_shared_scenario_and_not_a_failover() -> None:
    assert "partition-replication" in SCENARIOS
    assert set(NOT_FAILOVER) <= set(SCENARIOS)
    # the nemesis' names for the scenarios it shares are the scenarios' own
    assert {"kill-node", "kill-keepalived", "kill-postgres", "kill-manager"} <= set(KINDS)
    assert {"link-down", "pause-node", "partition-replication"} <= set(KINDS)


# --- counting ----------------------------------------------------------------------------------

DUMP = """# ESC-HA: transactions this node committed that the new primary does not have.
# committed transactions: 734 736
# --- rows they wrote (inserts, new row versions):
# database esc:
\t 1: relation = "tenants"\t(typeid = 25, len = -1, typmod = -1, byval = f)
\t 2: rows = "<table xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">

<row>
  <name>nm1-w0-7</name>
  <description></description>
</row>

<row>
  <name>nm1-w1-8</name>
  <description></description>
</row>

</table>
"\t(typeid = 142, len = -1, typmod = -1, byval = f)
\t----
"""


def test_dumps_are_counted_in_rows_and_writer_tenants() -> None:
    assert dump_rows(DUMP) == 2
    assert dump_tenants(DUMP, "nm1-w0") == {7}
    assert dump_tenants(DUMP, "nm1-w1") == {8}
    assert dump_tenants(DUMP, "nm1-w") == set()  # a prefix is a whole name part
    assert dump_rows("# no commit after 0/3000060; nothing to keep") == 0


def test_tenant_numbers_count_rows_per_write() -> None:
    names = ["nm1-w0-1", "nm1-w0-2", "nm1-w0-2", "nm1-w01-3", "nm1-w0-x", "other-4", " nm1-w0-5 "]
    assert tenant_numbers(names, "nm1-w0") == Counter({1: 1, 2: 2, 5: 1})


def test_tally_lost_kept_and_duplicated() -> None:
    present = Counter({1: 1, 2: 2, 4: 1, 9: 1})  # 9: written, never acknowledged: fine
    t = tally([1, 2, 3, 4, 5], present, preserved={3, 8}, retried_twice=1)
    assert t == Tally(acked=5, lost=2, lost_preserved=1, duplicated=2)
    assert t + Tally(1, 0, 0, 0) == Tally(6, 2, 1, 2)
    assert tally([], Counter(), []) == Tally(0, 0, 0, 0)


def test_agent_reports_are_found_in_logs_and_history() -> None:
    lines = [
        "esc-ha-0: 2026-11-27 10:00:00,001 INFO esc.agent: MASTER: split brain: esc-ha-1 is ...",
        "esc-ha-1: ... keepalived elected us but esc-ha-0 still serves (VRRP partition?): ...",
        "esc-ha-1: BACKUP: standby: streaming from esc-ha-0, replay lag 0 B",
    ]
    assert len(mentions(lines, "split brain")) == 1
    assert len(mentions(lines, "VRRP partition?")) == 1
    items = [{"time": 10.0, "reason": "a"}, {"time": 20.0, "reason": "b"}, {"reason": "no time"}]
    assert [i["reason"] for i in history_since(items, 15.0)] == ["b"]


def test_summarize_per_kind_keeps_unrecovered_steps_visible() -> None:
    records = [
        {"kind": "kill-node", "recovered": True, "to_healthy_s": 5.0, "writes_resumed_s": 0.8},
        {"kind": "kill-node", "recovered": False, "to_healthy_s": None, "error": "boom"},
        {"kind": "partition-all", "recovered": True, "to_healthy_s": 7.0, "split_brain": True},
        {"kind": "partition-all", "recovered": True, "to_healthy_s": 6.0, "diverged_rows": 3},
    ]
    rows = summarize(records)
    assert list(rows) == ["kill-node", "partition-all"]
    kn, pa = rows["kill-node"], rows["partition-all"]
    assert (kn.steps, kn.unrecovered, kn.errors, kn.to_healthy, kn.writes_resumed) == (
        2,
        1,
        1,
        [5.0],
        [0.8],
    )
    assert (pa.split_brain, pa.diverged_rows, pa.to_healthy) == (1, 3, [7.0, 6.0])


# --- the pair's health -------------------------------------------------------------------------


def _master(**over: Any) -> dict[str, Any]:
    st: dict[str, Any] = {
        "state": "MASTER",
        "vip_held": True,
        "service": {"active": True, "healthy": True},
        "db": {"role": "primary", "sync_standby": "esc-ha-1", "streaming": False},
        "peer_outdated_from": None,
        "self_outdated_from": None,
        "switchover": False,
    }
    return st | over


def _backup(**over: Any) -> dict[str, Any]:
    st: dict[str, Any] = {
        "state": "BACKUP",
        "vip_held": False,
        "service": {"active": False, "healthy": True},
        "db": {"role": "standby", "sync_standby": None, "streaming": True},
        "peer_outdated_from": None,
        "self_outdated_from": None,
        "switchover": False,
    }
    return st | over


QUORUM_OK = {"holder": True, "sync": {"primary": "esc-ha-0", "sync": "esc-ha-1"}}


@pytest.mark.parametrize(
    ("master", "backup", "why"),
    [
        (_master(), _backup(), None),
        (None, _backup(), "no answer from the agent on esc-ha-0"),
        (_master(), _backup(state="SWITCHING"), "states esc-ha-0 MASTER, esc-ha-1 SWITCHING"),
        (_master(), _master(), "states esc-ha-0 MASTER, esc-ha-1 MASTER"),
        (_master(vip_held=False), _backup(), "esc-ha-0: VIP not held"),
        (_master(), _backup(vip_held=True), "esc-ha-1: holds the VIP too"),
        (_master(service={"active": False}), _backup(), "esc-ha-0: service inactive"),
        (
            _master(),
            _backup(db={"role": "standby", "streaming": False}),
            "esc-ha-1: not streaming",
        ),
        (
            _master(db={"role": "primary", "sync_standby": None}),
            _backup(),
            "esc-ha-0: synchronous standby None",
        ),
        (_master(peer_outdated_from=123), _backup(), "esc-ha-0: esc-ha-1 marked outdated"),
        (_master(), _backup(self_outdated_from=123), "esc-ha-1: outdated"),
        (_master(switchover=True), _backup(), "switchover in progress"),
        # quorum mode: the primary holds the key and etcd records the standby in sync
        (_master(quorum=QUORUM_OK), _backup(), None),
        (
            _master(quorum={**QUORUM_OK, "holder": False}),
            _backup(),
            "esc-ha-0: not the leader key's holder",
        ),
        (
            _master(quorum={**QUORUM_OK, "sync": {"primary": "esc-ha-0", "sync": ""}}),
            _backup(),
            "esc-ha-0: etcd records {'primary': 'esc-ha-0', 'sync': ''}, not esc-ha-1 in sync",
        ),
    ],
)
def test_pair_verdict(
    master: dict[str, Any] | None, backup: dict[str, Any] | None, why: str | None
) -> None:
    health = pair_verdict({"esc-ha-0": master, "esc-ha-1": backup})
    assert health.why_not == why
    assert health.ok is (why is None)
    if why is None:
        assert (health.master, health.backup) == ("esc-ha-0", "esc-ha-1")


def test_pair_verdict_names_the_roles_whichever_node_holds_them() -> None:
    master = _master(db={"role": "primary", "sync_standby": "esc-ha-0"})
    health = pair_verdict({"esc-ha-0": _backup(), "esc-ha-1": master})
    assert health.ok and (health.master, health.backup) == ("esc-ha-1", "esc-ha-0")


# --- the bench's command line, without a lab ---------------------------------------------------


def _bench_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("nemesis_bench", BENCH)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_bench_can_inject_every_kind_it_schedules() -> None:
    bench = _bench_module()
    assert set(bench.INJECT) == set(KINDS)
    assert bench.hosts_of("both", "a", "b") == ["a", "b"]
    assert bench.hosts_of("standby", "a", "b") == ["b"]


def _run_bench(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    root = tmp_path / "lab"
    env = dict(os.environ, ESC_LAB_ROOT=str(root))
    res = subprocess.run(
        [sys.executable, str(BENCH), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert not root.exists(), "the bench touched the lab"
    return res


def test_help_and_dry_run_touch_no_lab(tmp_path: Path) -> None:
    res = _run_bench(tmp_path, "--help")
    assert res.returncode == 0 and "--dry-run" in res.stdout and "--faults" in res.stdout
    log = tmp_path / "steps.jsonl"
    res = _run_bench(tmp_path, "--faults", "25", "--seed", "5", "--dry-run", "--log", str(log))
    assert res.returncode == 0, res.stderr
    lines = res.stdout.strip().splitlines()
    figures = json.loads(lines[-1])
    assert figures["bench"] == "nemesis" and figures["dry_run"] is True
    assert figures["faults"] == 25 and sum(figures["kinds"].values()) == 25
    labels = [s.label for s in schedule(5, 25)]
    assert all(label in res.stdout for label in labels)
    assert not log.exists()


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    res = _run_bench(tmp_path, "--dry-run", "--weights", "kill-everything=1")
    assert res.returncode == 2 and "unknown fault kind" in res.stderr


def test_alone_windows_open_at_the_mark_and_close_at_the_first_poll_without_it() -> None:
    w = AloneWindows()
    w.saw("esc-ha-0", 100.0, None)
    w.saw("esc-ha-0", 105.2, 105.0)  # polled 0.2 s after the mark: the window opens at 105.0
    w.saw("esc-ha-0", 106.0, 105.0)
    w.saw("esc-ha-0", 107.0, None)  # back in sync by then
    w.saw("esc-ha-0", 110.0, 109.5)  # a second episode, still open at the end
    assert w.spans["esc-ha-0"] == [(105.0, 107.0), (109.5, None)]
    assert [w.covers("esc-ha-0", t) for t in (104.9, 105.0, 107.0, 108.0, 1e9)] == [
        False, True, True, False, True,
    ]  # fmt: skip
    assert not w.covers("esc-ha-1", 106.0)  # never seen alone
    w.saw("esc-ha-1", 50.0, 40.0)
    w.saw("esc-ha-1", 51.0, 50.5)  # a new mark without a poll in between: a new window
    assert w.spans["esc-ha-1"] == [(40.0, 51.0), (50.5, None)]


def test_only_writes_acknowledged_alone_and_kept_are_what_available_allows() -> None:
    w = AloneWindows()
    w.saw("esc-ha-0", 10.0, 9.0)
    w.saw("esc-ha-0", 20.0, None)
    acks = [(1, 8.0, "esc-ha-0"), (2, 9.5, "esc-ha-0"), (3, 9.6, "esc-ha-1"), (4, 9.7, "esc-ha-0")]
    allowed, unexplained = allowed_losses(acks, lost={1, 2, 3, 4}, kept={1, 2, 3}, windows=w)
    # 1: before the node acknowledged alone; 3: the other node; 4: in no dump
    assert (allowed, unexplained) == ({2}, {1, 3, 4})
    assert allowed_losses(acks, lost=set(), kept={1, 2}, windows=w) == (set(), set())
