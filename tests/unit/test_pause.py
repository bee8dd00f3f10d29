"""Maintenance mode and the scheduled switchover (issue 16): the pure rules (core/veto.py
PAUSED, core/requests.py), the peer view's field, the persisted memory."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from esc.agent.local_api import read_only
from esc.agent.memory import load_memory, memory_text
from esc.core.decide import decide
from esc.core.facts import DecideConfig
from esc.core.requests import (
    LATE_S,
    cancel_switchover,
    due_switchover,
    request_switchover,
    schedule_switchover,
    set_pause,
)
from esc.errors import ConfigError, DriverError
from esc.model import (
    DbRole,
    DbStatus,
    Memory,
    NodeState,
    Observation,
    Pause,
    PeerView,
    ServiceView,
    VrrpState,
)
from esc.wire import parse_view, peer_view

S = NodeState
CFG = DecideConfig(node_name="esc-ha-1", peer_name="esc-ha-0", first_node=False, gateway="gw")
PAUSED = Pause(True, 3, "escadm on esc-ha-0", 1000.0)
STANDBY_DB = DbStatus(DbRole.STANDBY, timeline=1, lsn=900, receive_lsn=900, streaming=False)
PRIMARY_DB = DbStatus(DbRole.PRIMARY, timeline=1, lsn=900, sync_standby="esc-ha-0", sync_names="x")
SILENT = PeerView(False, silent_for=5.0)
PEER_STANDBY = PeerView(
    True, state=S.BACKUP, db_role=DbRole.STANDBY, timeline=1, lsn=900, streaming=True
)


def obs(vrrp: VrrpState, db: DbStatus, peer: PeerView, **kw: object) -> Observation:
    base = Observation(
        now=100.0,
        wall=2000.0,
        vrrp=vrrp,
        vip_held=False,
        db=db,
        service=ServiceView(active=db.role is DbRole.PRIMARY, healthy=True),
        peer=peer,
        gate_open=True,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def standby(pause: Pause = PAUSED, **kw: object) -> Memory:
    return replace(Memory(state=S.BACKUP, peer_seen=True, pause=pause), **kw)  # type: ignore[arg-type]


# --- the rules ---------------------------------------------------------------------------------


@pytest.mark.parametrize("vrrp", [VrrpState.MASTER, VrrpState.FAULT, VrrpState.BACKUP])
def test_paused_the_standby_does_not_take_over_when_the_primary_looks_dead(
    vrrp: VrrpState,
) -> None:
    d = decide(obs(vrrp, STANDBY_DB, SILENT), standby(), CFG)
    assert d.next_state is S.BACKUP
    assert "Promote" not in d.action_kinds and "CloseGate" in d.action_kinds
    if vrrp is not VrrpState.BACKUP:  # (keepalived BACKUP: the standby's usual sentence)
        assert "paused (maintenance mode, by escadm on esc-ha-0)" in d.reason
    # resumed, the same observation elected by keepalived promotes
    d = decide(obs(VrrpState.MASTER, STANDBY_DB, SILENT), standby(Pause(False, 4)), CFG)
    assert "Promote" in d.action_kinds and d.rule_id == "promote-alone"


def test_paused_the_primary_serves_on_with_the_gateway_lost_or_the_service_failing() -> None:
    mem = Memory(state=S.MASTER, peer_seen=True, pause=PAUSED)
    o = obs(VrrpState.MASTER, PRIMARY_DB, PEER_STANDBY, gateway_ok=False)
    d = decide(o, mem, CFG)
    assert d.next_state is S.MASTER and d.rule_id == "serve/in-sync"
    assert "CloseGate" not in d.action_kinds and "DeactivateService" not in d.action_kinds
    assert "PAUSED: no automatic failover, serving on though gateway gw unreachable" in d.reason
    sick = replace(o, gateway_ok=True, service=ServiceView(True, False, failures=3))
    d = decide(sick, mem, CFG)
    assert d.next_state is S.MASTER and "service unhealthy" in d.reason
    # not paused: the same findings give the role up
    assert decide(o, replace(mem, pause=Pause()), CFG).rule_id == "gateway-lost"
    assert decide(sick, replace(mem, pause=Pause()), CFG).rule_id == "master-vetoed"


def test_paused_a_manual_switchover_is_admitted_and_the_standby_takes_the_role() -> None:
    mem = Memory(state=S.MASTER, peer_seen=True, pause=PAUSED)
    o = obs(VrrpState.MASTER, PRIMARY_DB, PEER_STANDBY)
    mem2, why = request_switchover(o, mem, CFG)
    assert why is None and mem2.switchover_since == 100.0
    # the standby, its peer handing over, is electable and promotes when elected
    handing = replace(SILENT, reachable=True, state=S.SWITCHING, db_role=DbRole.PRIMARY,
                      timeline=1, lsn=900, handing_over=True)  # fmt: skip
    d = decide(obs(VrrpState.MASTER, STANDBY_DB, handing), standby(), CFG)
    assert "Promote" in d.action_kinds


def test_force_primary_lifts_the_pause() -> None:
    d = decide(obs(VrrpState.MASTER, STANDBY_DB, SILENT), standby(forced=True), CFG)
    assert "Promote" in d.action_kinds


# --- pair-wide: the peer's record -------------------------------------------------------------


def test_the_peers_newer_record_is_adopted_and_paused_wins_a_tie() -> None:
    peer = replace(PEER_STANDBY, pause=Pause(True, 5, "escadm on esc-ha-0", 10.0))
    me = Memory(state=S.MASTER, peer_seen=True, pause=Pause(False, 4))
    o = obs(VrrpState.MASTER, PRIMARY_DB, peer)
    assert decide(o, me, CFG).memory.pause == peer.pause
    tie = replace(me, pause=Pause(False, 5))
    assert decide(o, tie, CFG).memory.pause == peer.pause
    older = replace(peer, pause=Pause(True, 3))
    assert decide(replace(o, peer=older), me, CFG).memory.pause == me.pause
    # an older agent's view has no pause: nothing is learnt
    assert decide(replace(o, peer=PEER_STANDBY), me, CFG).memory.pause == me.pause


def test_pause_and_resume_take_a_seq_above_both_nodes() -> None:
    peer = replace(PEER_STANDBY, pause=Pause(False, 7))
    o = obs(VrrpState.MASTER, PRIMARY_DB, peer)
    mem, msg = set_pause(o, Memory(pause=Pause(False, 2)), True, "escadm on esc-ha-1")
    assert mem.pause == Pause(True, 8, "escadm on esc-ha-1", 2000.0) and "paused by" in msg
    same, msg = set_pause(o, mem, True, "x")
    assert same is mem and msg.startswith("already paused")
    mem, msg = set_pause(o, mem, False, "y")
    assert mem.pause.seq == 9 and not mem.pause.paused and msg.startswith("resumed by y")


def test_the_peer_view_carries_the_pause_and_an_older_view_still_parses() -> None:
    view = peer_view(node="esc-ha-0", state=S.MASTER, db=PRIMARY_DB, serving=True,
                     vip_held=True, announced=False, outdated_lsn=None, outdated=False,
                     handing_over=False, reason="r", cycle=1, pause=PAUSED)  # fmt: skip
    assert parse_view(view, "esc-ha-0").pause == PAUSED
    older = {k: v for k, v in view.items() if k != "pause"}
    assert parse_view(older, "esc-ha-0").pause is None
    bad = {**view, "pause": {**view["pause"], "seq": "3"}}
    with pytest.raises(DriverError, match=r"pause\.seq"):
        parse_view(bad, "esc-ha-0")


# --- persisted ------------------------------------------------------------------------------


def test_the_pause_and_the_schedule_survive_a_restart(tmp_path: Path) -> None:
    f = tmp_path / "agent_memory.json"
    mem = Memory(pause=PAUSED, switchover_at=3000.5, switchover_at_by="escadm")
    f.write_text(memory_text(mem))
    back = load_memory(f)
    assert (back.pause, back.switchover_at, back.switchover_at_by) == (PAUSED, 3000.5, "escadm")
    # an older agent's file: not paused, nothing scheduled
    data = json.loads(f.read_text())
    for k in ("pause", "switchover_at", "switchover_at_by"):
        del data[k]
    f.write_text(json.dumps(data))
    assert load_memory(f).pause == Pause() and load_memory(f).switchover_at is None
    f.write_text(json.dumps({**data, "pause": {"paused": "yes", "seq": 1, "by": "", "at": 1}}))
    with pytest.raises(ConfigError, match=r"pause\.paused"):
        load_memory(f)


# --- the scheduled switchover -----------------------------------------------------------------


def test_a_schedule_is_refused_in_the_past_twice_or_off_the_primary() -> None:
    o = obs(VrrpState.MASTER, PRIMARY_DB, PEER_STANDBY)
    mem = Memory(state=S.MASTER, peer_seen=True)
    _, why = schedule_switchover(o, mem, 1999.0, "escadm")
    assert why is not None and why.startswith("at:")
    mem2, why = schedule_switchover(o, mem, 2010.0, "escadm")
    assert why is None and mem2.switchover_at == 2010.0
    _, why = schedule_switchover(o, mem2, 2020.0, "escadm")
    assert why is not None and "already scheduled" in why
    _, why = schedule_switchover(o, replace(mem, state=S.BACKUP), 2010.0, "escadm")
    assert why is not None and "not MASTER" in why
    gone, why = cancel_switchover(mem2, "escadm")
    assert why is None and gone.switchover_at is None and "cancelled" in gone.switchover_note
    assert cancel_switchover(gone, "escadm")[1] == "no switchover is scheduled"


def test_a_due_switchover_runs_through_the_admission_or_says_why_not() -> None:
    mem = Memory(state=S.MASTER, peer_seen=True, switchover_at=2000.0, switchover_at_by="op")
    o = obs(VrrpState.MASTER, PRIMARY_DB, PEER_STANDBY)
    early = replace(o, wall=1999.0)
    assert due_switchover(early, mem, CFG) == (mem, None)
    done, note = due_switchover(o, mem, CFG)
    assert done.switchover_since == 100.0 and done.switchover_at is None
    assert note is not None and "started" in note
    lagging = replace(o, peer=replace(PEER_STANDBY, streaming=False))
    refused, note = due_switchover(lagging, mem, CFG)
    assert refused.switchover_since is None and refused.switchover_at is None
    assert (
        note
        == "scheduled switchover (by op) not run: peer esc-ha-0 is not streaming from this node"
    )
    assert refused.switchover_note == note
    late, note = due_switchover(replace(o, wall=2000.0 + LATE_S + 1), mem, CFG)
    assert late.switchover_since is None and note is not None and "not running then" in note


def test_the_portals_read_only_socket_refuses_the_maintenance_requests() -> None:
    seen: list[str] = []

    def agent(method: str, path: str, _body: dict[str, object]) -> tuple[int, dict[str, object]]:
        seen.append(path)
        return 200, {}

    serve = read_only(agent)  # type: ignore[arg-type]
    for path in ("/pause", "/resume", "/switchover/schedule", "/switchover/cancel"):
        assert serve("POST", path, {})[0] == 403
    assert not seen
