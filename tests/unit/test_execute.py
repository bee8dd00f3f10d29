"""The executor: one handler per action type, long actions on their own thread."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from esc import model
from esc.agent.execute import Executor, Threaded
from esc.agent.loop import hurried
from esc.core.decide import decide
from esc.core.facts import DecideConfig
from esc.drivers.base import FollowResult, Progress
from esc.drivers.fake import FakeDatabase, FakeQuorum
from esc.errors import DbError, EscError
from esc.model import (
    Action,
    DbRole,
    DbStatus,
    Decision,
    Follow,
    Memory,
    NodeState,
    Observation,
    OpenGate,
    PeerView,
    Promote,
    RecordSync,
    ServiceView,
    SyncRecord,
    VrrpState,
)


class _Vrrp:
    def __init__(self) -> None:
        self.gate: list[bool] = []

    def set_gate(self, open_: bool) -> None:
        self.gate.append(open_)

    def set_rank(self, rank: int) -> None:
        pass


class _History:
    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, src: str, dst: str, reason: str) -> None:
        self.items.append(reason)


class _SlowDb(FakeDatabase):
    """A clone that takes as long as the test says, reporting progress on the way."""

    def __init__(self) -> None:
        super().__init__("esc-ha-0", DbRole.ABSENT)
        self.release = threading.Event()
        self.started = threading.Event()
        self.error: Exception | None = None

    def follow(self, primary_host: str, progress: Progress | None = None) -> FollowResult:
        if progress is not None:
            progress("cloning", 40, 100)
        self.started.set()  # after the progress, which the test then reads
        assert self.release.wait(10)
        if self.error is not None:
            raise self.error
        return super().follow(primary_host, progress)


def _executor(db: FakeDatabase, runner: Any, beats: list[float]) -> Executor:
    any_: Any = object()
    return Executor(
        node_name="esc-ha-0",
        peer_name="esc-ha-1",
        peer_host="192.0.2.11",
        vrrp=_Vrrp(),  # type: ignore[arg-type]
        vip=any_,
        db=db,
        service=any_,
        history=_History(),
        state=lambda: "SWITCHING",
        beat=lambda: beats.append(time.monotonic()),
        runner=runner,
    )


def _follow(*actions: Action) -> Decision:
    return Decision(NodeState.SWITCHING, actions, "cloning from esc-ha-1")


def test_a_long_follow_runs_on_its_thread_and_is_collected_when_done() -> None:
    db, woken = _SlowDb(), threading.Event()
    ex = _executor(db, Threaded(woken.set), [])
    assert ex.run(_follow(Follow("esc-ha-1")))  # returns at once: the clone goes on
    assert db.started.wait(5)
    assert ex.busy == "following esc-ha-1"
    assert ex.progress is not None and ex.progress.done == 40
    assert ex.collect()  # nothing finished yet
    db.release.set()
    assert woken.wait(5)
    assert ex.busy is None and ex.progress is None
    assert ex.collect() and db.role is DbRole.STANDBY


def test_a_failed_long_follow_is_reported_by_collect() -> None:
    db, woken = _SlowDb(), threading.Event()
    db.error = DbError("pg_basebackup: connection refused")
    db.release.set()
    ex = _executor(db, Threaded(woken.set), [])
    assert ex.run(_follow(Follow("esc-ha-1")))
    assert woken.wait(5)
    assert not ex.collect()
    assert ex.collect()  # reported once


def test_follow_names_the_peer_and_only_one_runs() -> None:
    db = _SlowDb()
    ex = _executor(db, Threaded(lambda: None), [])
    assert not ex.run(_follow(Follow("esc-ha-9")))  # not the peer: refused, nothing started
    assert not db.started.is_set()
    assert ex.run(_follow(Follow("esc-ha-1")))
    assert db.started.wait(5)
    with pytest.raises(EscError, match="already"):
        ex.do(Follow("esc-ha-1"))
    db.release.set()


def test_inline_follow_runs_in_the_cycle() -> None:
    db = FakeDatabase("esc-ha-0", DbRole.ABSENT)
    beats: list[float] = []
    ex = _executor(db, None, beats)
    assert ex.run(_follow(Follow("esc-ha-1")))
    assert db.role is DbRole.STANDBY and ex.busy is None and beats


def test_while_a_long_action_runs_the_core_waits_in_its_state_with_the_gate_closed() -> None:
    cfg = DecideConfig(node_name="esc-ha-0", peer_name="esc-ha-1", first_node=True)
    o = Observation(
        now=5.0,
        vrrp=VrrpState.BACKUP,
        vip_held=False,
        db=DbStatus(DbRole.STOPPED),
        service=ServiceView(False, True),
        peer=PeerView(True, state=NodeState.MASTER, db_role=DbRole.PRIMARY, serving=True),
        busy="following esc-ha-1",
    )
    for state in (NodeState.SWITCHING, NodeState.FAULT):
        d = decide(o, Memory(state, peer_seen=True), cfg)
        assert (d.rule_id, d.next_state, d.action_kinds) == ("long-action", state, ("CloseGate",))
        assert d.reason == "following esc-ha-1 (in progress)"


def test_every_action_type_has_a_handler() -> None:
    kinds = {
        t
        for t in vars(model).values()
        if isinstance(t, type) and issubclass(t, model.Action) and t is not model.Action
    }
    ex = _executor(FakeDatabase(), None, [])
    assert kinds == set(ex.table), kinds ^ set(ex.table)


def test_the_actions_that_change_the_role_hurry_the_next_cycle() -> None:
    assert {c.__name__ for c in Action.__subclasses__() if c.hurries} == {
        "Promote", "ActivateService", "DeactivateService", "Follow", "InitPrimary", "StartDb",
        "RestartVrrp", "DropSync", "RestoreSync", "RemoveVip",
    }  # fmt: skip
    promote = Decision(NodeState.SWITCHING, (OpenGate(), Promote()), "promoting")
    assert hurried(promote, action_failed=False)
    assert not hurried(promote, action_failed=True)  # retried next cycle, not back to back
    assert not hurried(Decision(NodeState.MASTER, (OpenGate(),), "serving"), False)
    assert not hurried(None, False)


def test_record_sync_goes_to_the_quorum_keeper_and_fails_without_one() -> None:
    """Quorum mode: the record is swapped by the keeper (only as the holder, from the revision
    the decision read); a decision that records without quorum mode fails the action."""
    shared: dict[str, object] = {"leader": "esc-ha-0"}
    ex = _executor(FakeDatabase(), None, [])
    rec = SyncRecord("esc-ha-0", "esc-ha-1")
    assert not ex.run(Decision(NodeState.MASTER, (RecordSync(rec, 0),), "serving"))
    ex.quorum = FakeQuorum("esc-ha-0", shared)
    assert ex.run(Decision(NodeState.MASTER, (RecordSync(rec, 0),), "serving"))
    assert shared["sync"] == rec and shared["sync_rev"] == 1
    stale = RecordSync(SyncRecord("esc-ha-0"), 0)  # from a revision etcd no longer has
    assert ex.run(Decision(NodeState.MASTER, (stale,), "serving"))
    assert shared["sync"] == rec
