"""Quorum mode's rules (esc.core.quorum): decide() with etcd's view in the observation.

This node is esc-ha-1, the peer esc-ha-0. Each test is one property an operator relies on:
no serving without the leader key, no promotion unless recorded in sync, no drop from sync
before etcd records it.
"""

from __future__ import annotations

import math
from dataclasses import replace

from test_rules import GRID  # the two-node grid: keepalived, database, peer, memory

from esc.core.decide import decide
from esc.core.facts import DecideConfig, peer_serving
from esc.core.requests import request_switchover
from esc.model import (
    DbRole,
    DbStatus,
    Decision,
    DropSync,
    Memory,
    NodeState,
    Observation,
    PeerView,
    QuorumObs,
    RecordSync,
    ServiceView,
    SyncRecord,
    VrrpState,
)

S = NodeState
ME, PEER = "esc-ha-1", "esc-ha-0"
CFG = DecideConfig(node_name=ME, peer_name=PEER, first_node=False, quorum=True)
TWO_NODE = replace(CFG, quorum=False)

STANDBY = DbStatus(DbRole.STANDBY, timeline=1, lsn=900, receive_lsn=1000, streaming=True)
PRIMARY = DbStatus(
    DbRole.PRIMARY, timeline=2, lsn=1000, sync_standby=PEER, sync_names=f'FIRST 1 ("{PEER}")'
)
ALONE = replace(PRIMARY, sync_standby=None, streaming_to=())
PEER_SERVES = PeerView(
    reachable=True, state=S.MASTER, db_role=DbRole.PRIMARY, timeline=1, lsn=1000, serving=True
)
PEER_STANDBY = PeerView(
    reachable=True, state=S.BACKUP, db_role=DbRole.STANDBY, timeline=2, lsn=1000, streaming=True
)
SILENT = PeerView(reachable=False, silent_for=1.1)
ON = ServiceView(active=True, healthy=True)
OFF = ServiceView(active=False, healthy=True)

P_WITH_ME = SyncRecord(PEER, ME)  # the peer primary, this node its synchronous standby
P_ALONE = SyncRecord(PEER, "")
ME_ALONE = SyncRecord(ME, "")
ME_WITH_P = SyncRecord(ME, PEER)


def q(
    holder: bool, rec: SyncRecord | None, leader: str | None = None, takeover_in: float = math.inf
) -> QuorumObs:
    return QuorumObs(
        reachable=True,
        holder=holder,
        leader=ME if holder else leader,
        sync=rec,
        sync_revision=7 if rec else 0,
        serve_left=1.5 if holder else 0.0,
        takeover_in=takeover_in,
    )


def cycle(
    vrrp: VrrpState,
    db: DbStatus,
    peer: PeerView,
    quorum: QuorumObs | None,
    mem: Memory,
    service: ServiceView = OFF,
    cfg: DecideConfig = CFG,
) -> Decision:
    o = Observation(
        now=100.0, vrrp=vrrp, vip_held=False, db=db, service=service, peer=peer, quorum=quorum
    )
    return decide(o, mem, cfg)


BACKUP = Memory(state=S.BACKUP, peer_seen=True)
MASTER = Memory(state=S.MASTER, peer_seen=True, served_timeline=2)


def test_a_standby_without_the_key_vetoes_the_vip_and_does_not_campaign_while_the_peer_serves():
    d = cycle(VrrpState.FAULT, STANDBY, PEER_SERVES, q(False, P_WITH_ME, PEER), BACKUP)
    assert d.next_state is S.BACKUP and d.action_kinds == ("CloseGate",)
    assert "esc-ha-0 holds the leader key" in d.reason and not d.campaign


def test_a_standby_that_was_in_fault_is_a_standby_again_while_it_waits_for_etcd():
    """(Seen in the lab: a clone's unhealthy service put it in FAULT; the lease veto kept it
    there, and the pair never formed.)"""
    fault = Memory(state=S.FAULT, peer_seen=True)
    for rec in (P_WITH_ME, None):
        d = cycle(VrrpState.FAULT, STANDBY, PEER_SERVES, q(False, rec, PEER), fault)
        assert d.rule_id == "standby-quorum-wait" and d.next_state is S.BACKUP
        assert d.action_kinds == ("CloseGate",) and not d.campaign


def test_the_recorded_standby_campaigns_once_the_primary_is_silent():
    d = cycle(VrrpState.FAULT, STANDBY, SILENT, q(False, P_WITH_ME, PEER), BACKUP)
    assert d.campaign and d.next_state is S.BACKUP and "CloseGate" in d.action_kinds


def test_the_recorded_standby_opens_its_gate_just_before_the_silent_primarys_key_turns_stale():
    """So that keepalived's election (about 4 adverts from leaving FAULT) is over when the key
    is taken, instead of starting then; a key far from stale, or a peer that serves, keeps the
    gate closed."""
    lead = CFG.vrrp_lead_s
    d = cycle(VrrpState.FAULT, STANDBY, SILENT, q(False, P_WITH_ME, PEER, lead), BACKUP)
    assert "OpenGate" in d.action_kinds and d.campaign and d.next_state is S.BACKUP
    assert "Promote" not in d.action_kinds and "ActivateService" not in d.action_kinds
    d = cycle(VrrpState.FAULT, STANDBY, SILENT, q(False, P_WITH_ME, PEER, lead + 0.1), BACKUP)
    assert d.action_kinds == ("CloseGate",) and d.campaign
    d = cycle(VrrpState.FAULT, STANDBY, PEER_SERVES, q(False, P_WITH_ME, PEER, 0.0), BACKUP)
    assert d.action_kinds == ("CloseGate",) and not d.campaign
    cut = replace(q(False, P_WITH_ME, PEER, 0.0), reachable=False)
    d = cycle(VrrpState.FAULT, STANDBY, SILENT, cut, BACKUP)
    assert d.action_kinds == ("CloseGate",)


def test_a_standby_elected_before_it_holds_the_key_waits_for_it_without_serving():
    d = cycle(VrrpState.MASTER, STANDBY, SILENT, q(False, P_WITH_ME, PEER, 0.2), BACKUP)
    assert d.rule_id == "await-lease" and d.next_state is S.SWITCHING and d.campaign
    assert not {"Promote", "ActivateService", "DropSync"} & set(d.action_kinds)
    assert "taking the leader key (esc-ha-0 holds it; takeover in 0.2 s)" in d.reason
    d = cycle(VrrpState.MASTER, STANDBY, SILENT, q(True, P_WITH_ME), d.memory)
    assert "Promote" in d.action_kinds


def test_a_standby_not_recorded_in_sync_never_campaigns_nor_promotes():
    for rec in (P_ALONE, None, SyncRecord("", "")):
        d = cycle(VrrpState.MASTER, STANDBY, SILENT, q(False, rec, None), BACKUP)
        assert not d.campaign and "Promote" not in d.action_kinds, rec
        # even holding the key (won on a record that changed before the key was taken)
        d = cycle(VrrpState.MASTER, STANDBY, SILENT, q(True, rec), BACKUP)
        assert "Promote" not in d.action_kinds and not d.campaign, rec
        assert "not the synchronous member" in d.reason


def test_the_key_holder_promotes_and_records_before_it_drops_its_old_primary():
    d = cycle(VrrpState.MASTER, STANDBY, SILENT, q(True, P_WITH_ME), BACKUP)
    assert d.action_kinds == ("OpenGate", "Promote", "RecordSync")
    assert d.actions[2] == RecordSync(ME_ALONE, 7) and d.campaign
    # promoted, the record not yet changed: writes still wait for the old primary
    promoted = replace(ALONE, sync_standby=None)
    d = cycle(VrrpState.MASTER, promoted, SILENT, q(True, P_WITH_ME), d.memory)
    assert "DropSync" not in d.action_kinds and RecordSync(ME_ALONE, 7) in d.actions
    # etcd shows the record: now drop the old primary from sync
    d = cycle(VrrpState.MASTER, promoted, SILENT, q(True, ME_ALONE), d.memory)
    assert DropSync(promoted.lsn) in d.actions and "RecordSync" not in d.action_kinds


def test_the_two_node_pair_promotes_and_drops_at_once_without_etcd():
    d = cycle(VrrpState.MASTER, STANDBY, SILENT, None, BACKUP, cfg=TWO_NODE)
    assert d.action_kinds == ("OpenGate", "Promote", "DropSync") and not d.campaign


def test_a_primary_that_loses_the_key_stops_serving_and_campaigns_to_get_it_back():
    d = cycle(VrrpState.MASTER, PRIMARY, PEER_STANDBY, q(False, ME_WITH_P, None), MASTER, ON)
    assert d.next_state is S.FAULT
    assert "CloseGate" in d.action_kinds and "DeactivateService" in d.action_kinds
    assert d.campaign and "the leader key is free" in d.reason
    unreachable = QuorumObs(reachable=False, holder=False, error="no member answered")
    d = cycle(VrrpState.MASTER, PRIMARY, PEER_STANDBY, unreachable, MASTER, ON)
    assert d.next_state is S.FAULT and "etcd unreachable" in d.reason


def test_a_primary_etcd_does_not_record_follows_instead_of_campaigning():
    rec = SyncRecord(PEER, "")  # the peer took over and acknowledged alone since
    d = cycle(VrrpState.FAULT, ALONE, SILENT, q(False, rec, None), MASTER)
    assert not d.campaign
    assert "etcd records esc-ha-0 as the primary" in d.reason


def test_the_grace_running_out_records_before_it_drops():
    lost = replace(MASTER, standby_lost_since=90.0)  # 10 s ago, beyond the 5 s grace
    d = cycle(VrrpState.MASTER, ALONE, SILENT, q(True, ME_WITH_P), lost, ON)
    assert RecordSync(ME_ALONE, 7) in d.actions and "DropSync" not in d.action_kinds
    d = cycle(VrrpState.MASTER, ALONE, SILENT, q(True, ME_WITH_P), d.memory, ON)
    assert "DropSync" not in d.action_kinds  # still not recorded: writes wait
    d = cycle(VrrpState.MASTER, ALONE, SILENT, q(True, ME_ALONE), d.memory, ON)
    assert DropSync(ALONE.lsn) in d.actions


def test_a_standby_is_recorded_in_sync_only_once_it_replayed_what_was_acknowledged_before():
    mem = replace(MASTER, peer_outdated_from=500)
    behind = replace(PEER_STANDBY, lsn=900)
    d = cycle(VrrpState.MASTER, PRIMARY, behind, q(True, ME_ALONE), mem, ON)
    assert "RecordSync" not in d.action_kinds and d.memory.sync_from_lsn == 1000
    more = replace(PRIMARY, lsn=1500)  # LSN moved on, the mark stays at 1000
    d = cycle(VrrpState.MASTER, more, behind, q(True, ME_ALONE), d.memory, ON)
    assert d.memory.sync_from_lsn == 1000 and "RecordSync" not in d.action_kinds
    d = cycle(VrrpState.MASTER, more, PEER_STANDBY, q(True, ME_ALONE), d.memory, ON)
    assert RecordSync(ME_WITH_P, 7) in d.actions
    d = cycle(VrrpState.MASTER, more, PEER_STANDBY, q(True, ME_WITH_P), d.memory, ON)
    assert "RecordSync" not in d.action_kinds and d.rule_id == "serve/in-sync"
    gone = replace(more, sync_standby=None)
    d = cycle(VrrpState.MASTER, gone, SILENT, q(True, ME_WITH_P), d.memory, ON)
    assert d.memory.sync_from_lsn is None  # measured afresh next time it is in sync


def test_both_primaries_the_one_without_the_key_never_keeps_the_role():
    peer = replace(PEER_SERVES, timeline=1, lsn=10)  # our data newer: two-node mode keeps it
    two = cycle(VrrpState.MASTER, PRIMARY, peer, None, MASTER, ON, cfg=TWO_NODE)
    assert two.rule_id == "split-brain-keep"
    d = cycle(VrrpState.MASTER, PRIMARY, peer, q(False, ME_WITH_P, PEER), MASTER, ON)
    assert d.next_state is S.FAULT and "OpenGate" not in d.action_kinds


def test_a_switchover_that_gave_up_the_key_aborts_without_serving():
    mem = replace(MASTER, switchover_since=80.0)  # 20 s ago, beyond the 10 s timeout
    d = cycle(VrrpState.MASTER, PRIMARY, SILENT, q(False, ME_WITH_P, PEER), mem)
    assert d.rule_id == "handover-abort" and "ActivateService" not in d.action_kinds
    assert "not serving without the leader key" in d.reason
    d = cycle(VrrpState.MASTER, PRIMARY, SILENT, q(True, ME_WITH_P), mem)
    assert "ActivateService" in d.action_kinds


def test_a_node_etcd_records_skips_the_cold_boot_wait_for_its_peer():
    cold = Memory(state=S.SWITCHING)
    d = cycle(VrrpState.FAULT, PRIMARY, SILENT, q(False, ME_WITH_P, None), cold)
    assert d.campaign and "cold boot" not in d.reason
    d = cycle(VrrpState.FAULT, PRIMARY, SILENT, q(False, P_ALONE, None), cold)
    assert not d.campaign and "cold boot" in d.reason


def test_the_first_primary_of_a_pair_campaigns_with_no_record_yet():
    d = cycle(VrrpState.FAULT, ALONE, PEER_STANDBY, q(False, None, None), MASTER)
    assert d.campaign
    d = cycle(VrrpState.FAULT, STANDBY, SILENT, q(False, None, None), BACKUP)
    assert not d.campaign  # a standby needs the record


def test_a_handover_or_an_unhealthy_service_resigns_the_key():
    mem = replace(MASTER, switchover_since=99.0)
    assert not cycle(VrrpState.MASTER, PRIMARY, PEER_STANDBY, q(True, ME_WITH_P), mem).campaign
    sick = ServiceView(active=True, healthy=False, failures=3)
    d = cycle(VrrpState.MASTER, PRIMARY, PEER_STANDBY, q(True, ME_WITH_P), MASTER, sick)
    assert not d.campaign


def test_two_node_mode_never_campaigns_nor_records():
    for vrrp, db, peer in (
        (VrrpState.MASTER, STANDBY, SILENT),
        (VrrpState.MASTER, PRIMARY, PEER_STANDBY),
        (VrrpState.MASTER, ALONE, SILENT),
    ):
        d = cycle(vrrp, db, peer, None, replace(MASTER, standby_lost_since=0.0), cfg=TWO_NODE)
        assert not d.campaign and "RecordSync" not in d.action_kinds


# --- over the whole grid of test_rules.py, with etcd's views ------------------------------------

QUORUM_VIEWS = [
    QuorumObs(reachable=False, holder=False, error="no member answered"),
    q(False, None, None),
    q(False, P_WITH_ME, PEER),
    q(False, P_WITH_ME, None),
    q(False, P_WITH_ME, PEER, 0.0),
    q(False, P_WITH_ME, PEER, 5.0),
    q(False, ME_WITH_P, None),
    q(False, ME_WITH_P, PEER, 0.0),
    q(True, None),
    q(True, P_WITH_ME),
    q(True, P_ALONE),
    q(True, ME_ALONE),
    q(True, ME_WITH_P),
]


def test_over_the_grid_no_rule_serves_promotes_or_drops_against_etcd() -> None:
    """The properties quorum mode promises, for every rule that can fire: the gate opens and
    the service activates only on the key's holder; a standby promotes only as the holder
    recorded in sync; the standby is dropped from sync only once etcd records the primary
    alone; a node campaigns only where the record names it. (Forced: the operator overrides
    the record, not the lease.)"""
    fired: set[str] = set()
    for i, (o, mem) in enumerate(GRID):
        view = QUORUM_VIEWS[i % len(QUORUM_VIEWS)]
        cfg = replace(CFG, node_name="esc-ha-1", peer_name="esc-ha-0")
        d = decide(replace(o, quorum=view), mem, cfg)
        fired.add(d.rule_id)
        kinds, rec = d.action_kinds, view.sync
        where = f"{d.rule_id}: {d.reason} ({view}, {o.db.role}, {mem})"
        if "ActivateService" in kinds:
            assert view.holder, where
        if "OpenGate" in kinds and not view.holder:  # electable only to take the key
            assert o.db.role is DbRole.STANDBY and view.reachable, where
            assert not peer_serving(o) and view.takeover_in <= cfg.vrrp_lead_s, where
        if "Promote" in kinds:
            assert view.holder and (mem.forced or (rec is not None and rec.sync == ME)), where
        if "DropSync" in kinds:
            assert rec == ME_ALONE, where
        if d.campaign and not mem.forced:
            if o.db.role is DbRole.STANDBY:
                assert rec is not None and rec.sync == ME, where
            else:
                assert rec is None or rec.names(ME), where
        assert "grace-over-tell" not in d.rule_id, where
    for rule in ("serve/quorum-unsync", "promote-alone", "standby-quorum-wait", "await-lease"):
        assert rule in fired, sorted(fired)


def test_a_switchover_waits_until_etcd_records_the_standby_in_sync():
    """(The standby could not take the key otherwise: the switchover would time out.)"""
    o = Observation(
        now=100.0, vrrp=VrrpState.MASTER, vip_held=True, db=PRIMARY, service=ON,
        peer=PEER_STANDBY, quorum=q(True, ME_ALONE),
    )  # fmt: skip
    _, why = request_switchover(o, MASTER, CFG)
    assert why is not None and "etcd does not record esc-ha-0" in why
    mem, why = request_switchover(replace(o, quorum=q(True, ME_WITH_P)), MASTER, CFG)
    assert why is None and mem.switchover_since == 100.0
    assert request_switchover(replace(o, quorum=None), MASTER, TWO_NODE)[1] is None
