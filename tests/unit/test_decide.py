"""decide() as tables: (observation, previous memory) -> (state, action kinds, reason)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from esc.core.decide import alone_transactions, context, decide
from esc.core.facts import DecideConfig
from esc.core.table import ALLOWED, check_transition
from esc.errors import IllegalTransition
from esc.model import (
    DbRole,
    DbStatus,
    Memory,
    NodeState,
    Observation,
    PeerView,
    ServiceView,
    VrrpState,
)

S = NodeState
CFG = DecideConfig(
    node_name="esc-ha-1", peer_name="esc-ha-0", first_node=False, gateway="192.0.2.1"
)

PRIMARY = DbStatus(
    DbRole.PRIMARY, timeline=1, lsn=1000, sync_standby="esc-ha-0", sync_names='FIRST 1 ("esc-ha-0")'
)
STANDBY = DbStatus(DbRole.STANDBY, timeline=1, lsn=900, receive_lsn=1000, streaming=True)
PEER_MASTER = PeerView(
    reachable=True, state=S.MASTER, db_role=DbRole.PRIMARY, timeline=1, lsn=1000, serving=True
)
PEER_BACKUP = PeerView(
    reachable=True, state=S.BACKUP, db_role=DbRole.STANDBY, timeline=1, lsn=1000, streaming=True
)
SILENT = PeerView(reachable=False, silent_for=1.1)
ON = ServiceView(active=True, healthy=True)
OFF = ServiceView(active=False, healthy=True)
SEEN = Memory(state=S.BACKUP, peer_seen=True)


def obs(
    vrrp: VrrpState, db: DbStatus, peer: PeerView, service: ServiceView = OFF, **kw: object
) -> Observation:
    return Observation(
        now=100.0,
        vrrp=vrrp,
        vip_held=kw.pop("vip_held", False),  # type: ignore[arg-type]
        db=db,
        service=service,
        peer=peer,
        **kw,
    )  # type: ignore[arg-type]


CASES = [
    # (name, observation, previous memory, next state, action kinds, reason fragment)
    (
        "standby steady",
        obs(VrrpState.BACKUP, STANDBY, PEER_MASTER),
        SEEN,
        S.BACKUP,
        ("OpenGate",),
        "standby: streaming from esc-ha-0, replay lag 100 B",
    ),
    (
        "peer dies: promote",
        obs(VrrpState.MASTER, STANDBY, SILENT),
        SEEN,
        S.SWITCHING,
        ("OpenGate", "Promote", "DropSync"),
        "promoting self: keepalived MASTER, peer silent 1.1s, replay lag 100 B",
    ),
    (
        "promoted: activate",
        obs(VrrpState.MASTER, replace(PRIMARY, sync_standby=None, sync_names=""), SILENT),
        replace(SEEN, state=S.SWITCHING, peer_outdated_from=1000),
        S.MASTER,
        ("OpenGate", "ActivateService"),
        "serving as primary",
    ),
    # A crash between promote and activate: the next agent (fresh memory) completes it,
    # passing through SWITCHING since STOP -> MASTER is not an edge of the table.
    (
        "crash between promote and activate",
        obs(VrrpState.MASTER, PRIMARY, PEER_BACKUP),
        Memory(state=S.STOP),
        S.SWITCHING,
        ("OpenGate", "ActivateService"),
        "serving as primary",
    ),
    (
        "resume after crash, peer back",
        obs(VrrpState.MASTER, PRIMARY, PEER_BACKUP),
        replace(SEEN, state=S.SWITCHING),
        S.MASTER,
        ("OpenGate", "ActivateService"),
        "serving as primary",
    ),
    (
        "master steady",
        obs(VrrpState.MASTER, PRIMARY, PEER_BACKUP, ON),
        replace(SEEN, state=S.MASTER),
        S.MASTER,
        ("OpenGate",),
        "serving as primary",
    ),
    (
        "keepalived killed with VIP",
        obs(VrrpState.DEAD, PRIMARY, PEER_BACKUP, ON, vip_held=True),
        replace(SEEN, state=S.MASTER),
        S.FAULT,
        ("CloseGate", "RemoveVip", "DeactivateService", "RestartVrrp"),
        "keepalived not running",
    ),
    (
        "gateway lost",
        obs(VrrpState.MASTER, PRIMARY, PEER_BACKUP, ON, gateway_ok=False),
        replace(SEEN, state=S.MASTER),
        S.FAULT,
        ("CloseGate", "DeactivateService"),
        "gateway 192.0.2.1 unreachable",
    ),
    (
        "cold boot alone",
        obs(VrrpState.FAULT, STANDBY, PeerView(reachable=False, silent_for=9)),
        Memory(),
        S.SWITCHING,
        ("CloseGate",),
        "cold boot: waiting for peer esc-ha-0",
    ),
    (
        "forced primary alone",
        obs(VrrpState.MASTER, STANDBY, SILENT),
        Memory(state=S.SWITCHING, forced=True),
        S.SWITCHING,
        ("OpenGate", "Promote", "DropSync"),
        "promoting self",
    ),
    (
        "outdated standby is not promoted",
        obs(VrrpState.MASTER, STANDBY, SILENT),
        replace(SEEN, self_outdated_from=500),
        S.FAULT,
        ("CloseGate",),
        "outdated",
    ),
    (
        "VRRP-only partition: peer still serves",
        obs(VrrpState.MASTER, STANDBY, PEER_MASTER),
        SEEN,
        S.FAULT,
        ("CloseGate",),
        "still serves (VRRP partition?)",
    ),
    (
        "old primary back: follow",
        obs(
            VrrpState.BACKUP, replace(PRIMARY, sync_standby=None), replace(PEER_MASTER, timeline=2)
        ),
        replace(SEEN, state=S.SWITCHING),
        S.SWITCHING,
        ("CloseGate", "Follow"),
        "demoting: following esc-ha-0",
    ),
    (
        "service failing on master: yield",
        obs(
            VrrpState.MASTER,
            PRIMARY,
            PEER_BACKUP,
            ServiceView(active=True, healthy=False, failures=3),
        ),
        replace(SEEN, state=S.MASTER),
        S.FAULT,
        ("CloseGate", "DeactivateService"),
        "service unhealthy",
    ),
    (
        "first boot, first node creates",
        obs(
            VrrpState.FAULT,
            DbStatus(DbRole.ABSENT),
            PeerView(reachable=True, state=S.SWITCHING, db_role=DbRole.ABSENT),
        ),
        Memory(),
        S.SWITCHING,
        ("CloseGate",),
        "waiting for esc-ha-0 to create it",
    ),
    (
        "first boot, clone from peer",
        obs(
            VrrpState.FAULT,
            DbStatus(DbRole.ABSENT),
            replace(PEER_MASTER, state=S.SWITCHING, serving=False),
        ),
        Memory(),
        S.SWITCHING,
        ("CloseGate", "Follow"),
        "cloning from esc-ha-0",
    ),
    (
        "db stopped on master: fail over",
        obs(VrrpState.MASTER, DbStatus(DbRole.STOPPED), PEER_BACKUP, ON),
        replace(SEEN, state=S.MASTER),
        S.FAULT,
        ("CloseGate", "DeactivateService", "StartDb"),
        "database stopped: starting it",
    ),
    (
        "double fault: newer peer wins",
        obs(
            VrrpState.BACKUP,
            replace(STANDBY, lsn=500, streaming=False),
            replace(PEER_MASTER, state=S.SWITCHING, serving=False),
        ),
        Memory(state=S.SWITCHING, peer_seen=True),
        S.BACKUP,
        ("CloseGate",),
        "standby: not streaming",
    ),
]


# The rule (core/rules.py) each case must fire: "rule/sub-rule" where serve's policy applied.
RULE_OF = {
    "standby steady": "standby",
    "peer dies: promote": "promote-alone",
    "promoted: activate": "serve/degraded",
    "crash between promote and activate": "serve/in-sync",
    "resume after crash, peer back": "serve/in-sync",
    "master steady": "serve/in-sync",
    "keepalived killed with VIP": "vrrp-dead",
    "gateway lost": "gateway-lost",
    "cold boot alone": "wait-vetoed",
    "forced primary alone": "promote-alone",
    "outdated standby is not promoted": "master-vetoed",
    "VRRP-only partition: peer still serves": "refuse-vip-peer-serves",
    "old primary back: follow": "demote",
    "service failing on master: yield": "master-vetoed",
    "first boot, first node creates": "first-boot-wait-create",
    "first boot, clone from peer": "first-boot-clone",
    "db stopped on master: fail over": "db-stopped-start",
    "double fault: newer peer wins": "standby",
}


@pytest.mark.parametrize(
    ("name", "o", "prev", "state", "kinds", "reason"), CASES, ids=[c[0] for c in CASES]
)
def test_decide_table(
    name: str, o: Observation, prev: Memory, state: NodeState, kinds: tuple[str, ...], reason: str
) -> None:
    d = decide(o, prev, CFG)
    assert (d.next_state, d.action_kinds) == (state, kinds), d.reason
    assert d.rule_id == RULE_OF[name], d.reason
    assert reason in d.reason
    assert d.memory.state == d.next_state


def test_first_node_creates_the_database() -> None:
    cfg = replace(CFG, node_name="esc-ha-0", peer_name="esc-ha-1", first_node=True)
    o = obs(
        VrrpState.FAULT,
        DbStatus(DbRole.ABSENT),
        PeerView(reachable=True, state=S.SWITCHING, db_role=DbRole.ABSENT),
    )
    d = decide(o, Memory(), cfg)
    assert d.action_kinds == ("CloseGate", "InitPrimary")
    assert "first boot of the pair" in d.reason


def test_split_brain_resolved_by_data_exactly_one_side_yields() -> None:
    a = DbStatus(DbRole.PRIMARY, timeline=1, lsn=5000)
    b = DbStatus(DbRole.PRIMARY, timeline=2, lsn=3000)
    cfg_a = replace(CFG, node_name="esc-ha-0", peer_name="esc-ha-1")
    cfg_b = CFG
    view_a = PeerView(
        True, state=S.MASTER, db_role=DbRole.PRIMARY, timeline=1, lsn=5000, serving=True
    )
    view_b = PeerView(
        True, state=S.MASTER, db_role=DbRole.PRIMARY, timeline=2, lsn=3000, serving=True
    )
    prev = replace(SEEN, state=S.MASTER)
    da = decide(obs(VrrpState.MASTER, a, view_b, ON), prev, cfg_a)
    db = decide(obs(VrrpState.MASTER, b, view_a, ON), prev, cfg_b)
    assert da.next_state is S.FAULT and "newer data" in da.reason and "preserved" in da.reason
    assert db.next_state is S.MASTER and "keeping the role" in db.reason
    # The loser then follows the winner (rewind, preserving its diverged writes).
    follow = decide(obs(VrrpState.FAULT, a, view_b), da.memory, cfg_a)
    assert "Follow" in follow.action_kinds


def test_standby_loss_policy_available_drops_sync_after_grace() -> None:
    lost = replace(PRIMARY, sync_standby=None)
    prev = replace(SEEN, state=S.MASTER)
    d1 = decide(obs(VrrpState.MASTER, lost, SILENT, ON), prev, CFG)
    assert d1.action_kinds == ("OpenGate",) and d1.memory.standby_lost_since == 100.0
    later = replace(obs(VrrpState.MASTER, lost, SILENT, ON), now=105.5)
    d2 = decide(later, d1.memory, CFG)
    assert d2.action_kinds == ("OpenGate", "DropSync")
    assert d2.memory.peer_outdated_from == 1000
    assert "asynchronous" in d2.reason
    strict = replace(CFG, policy="strict")
    d3 = decide(later, d1.memory, strict)
    assert d3.action_kinds == ("OpenGate",) and "writes wait (strict)" in d3.reason


# A standby whose agent answers and cycles, lost from sync (a replication partition).


def test_the_exposure_counts_from_the_oldest_transaction_running_when_the_standby_was_lost() -> (
    None
):
    lost = replace(PRIMARY, sync_standby=None, xid_xmax=760, xid_xmin=750)
    prev = replace(SEEN, state=S.MASTER)
    d1 = decide(obs(VrrpState.MASTER, lost, SILENT, ON, wall=1.7e9), prev, CFG)
    # the grace: commits wait, nothing acknowledged alone yet; the bound is fixed now
    assert (d1.memory.alone_from_xid, d1.memory.alone_since) == (750, None)
    assert alone_transactions(lost, d1.memory) is None
    later = replace(obs(VrrpState.MASTER, lost, SILENT, ON, wall=1.7e9 + 5.5), now=105.5)
    d2 = decide(later, d1.memory, CFG)
    assert d2.action_kinds == ("OpenGate", "DropSync")
    assert (d2.memory.alone_from_xid, d2.memory.alone_since) == (750, 1.7e9 + 5.5)
    busy = replace(lost, xid_xmax=900, xid_xmin=899, sync_names="")
    d3 = decide(replace(later, db=busy, now=107.0, wall=1.7e9 + 7), d2.memory, CFG)
    assert (d3.memory.alone_from_xid, d3.memory.alone_since) == (750, 1.7e9 + 5.5)
    assert alone_transactions(busy, d3.memory) == 150
    # back in sync: the exposure is over
    back = replace(busy, sync_standby="esc-ha-0", sync_names='FIRST 1 ("esc-ha-0")')
    d4 = decide(replace(later, db=back, peer=PEER_BACKUP, now=110.0), d3.memory, CFG)
    assert d4.memory.peer_outdated_from is None
    assert (d4.memory.alone_from_xid, d4.memory.alone_since) == (None, None)
    assert alone_transactions(back, d4.memory) is None


def test_a_standby_back_within_the_grace_ends_the_exposure_it_never_had() -> None:
    lost = replace(PRIMARY, sync_standby=None, xid_xmax=760, xid_xmin=750)
    d1 = decide(obs(VrrpState.MASTER, lost, SILENT, ON), replace(SEEN, state=S.MASTER), CFG)
    assert d1.memory.alone_from_xid == 750
    d2 = decide(obs(VrrpState.MASTER, PRIMARY, PEER_BACKUP, ON), d1.memory, CFG)
    assert (d2.memory.standby_lost_since, d2.memory.alone_from_xid) == (None, None)


ANSWERING = replace(PEER_BACKUP, streaming=False, tells_outdated=True)


@pytest.mark.parametrize(
    ("peer", "rule", "kinds"),
    [
        (ANSWERING, "serve/grace-over-tell", ("OpenGate",)),  # wait for it to see the mark
        (replace(ANSWERING, outdated=True), "serve/grace-over", ("OpenGate", "DropSync")),
        (replace(ANSWERING, agent_silent_for=1.6), "serve/grace-over", ("OpenGate", "DropSync")),
        (replace(ANSWERING, tells_outdated=False), "serve/grace-over", ("OpenGate", "DropSync")),
        (SILENT, "serve/grace-over", ("OpenGate", "DropSync")),
    ],
    ids=["answering", "has-seen-it", "agent-stuck", "older-agent", "silent"],
)
def test_after_the_grace_the_primary_tells_an_answering_standby_before_it_acks_alone(
    peer: PeerView, rule: str, kinds: tuple[str, ...]
) -> None:
    lost = replace(PRIMARY, sync_standby=None)
    prev = replace(SEEN, state=S.MASTER, standby_lost_since=94.0)
    d = decide(obs(VrrpState.MASTER, lost, peer, ON), prev, CFG)
    assert (d.rule_id, d.action_kinds) == (rule, kinds), d.reason
    assert d.memory.peer_outdated_from == 1000  # the mark is published either way


def test_a_standby_keeps_the_last_mark_of_a_primary_that_went_silent() -> None:
    gone = PeerView(reachable=False, silent_for=3.0, last_outdated_lsn=700)
    d = decide(obs(VrrpState.MASTER, STANDBY, gone), SEEN, CFG)
    assert d.memory.self_outdated_from == 700
    assert d.rule_id == "master-vetoed" and "outdated" in d.reason
    # A primary takes nobody's word while the peer is silent.
    primary = decide(obs(VrrpState.MASTER, PRIMARY, gone, ON), replace(SEEN, state=S.MASTER), CFG)
    assert primary.memory.self_outdated_from is None


def test_switchover_quiesces_waits_then_releases() -> None:
    prev = replace(SEEN, state=S.MASTER, switchover_since=100.0)
    behind = replace(PEER_BACKUP, lsn=900)
    d1 = decide(obs(VrrpState.MASTER, PRIMARY, behind, ON), prev, CFG)
    assert d1.next_state is S.SWITCHING and d1.action_kinds == ("DeactivateService",)
    assert "waiting for esc-ha-0 to reach" in d1.reason
    d2 = decide(obs(VrrpState.MASTER, PRIMARY, PEER_BACKUP), d1.memory, CFG)
    assert d2.action_kinds == ("CloseGate",) and "releasing the VIP" in d2.reason
    # keepalived goes FAULT, the peer promotes and serves: follow it.
    d3 = decide(obs(VrrpState.FAULT, PRIMARY, replace(PEER_MASTER, timeline=2)), d2.memory, CFG)
    assert d3.action_kinds == ("CloseGate", "Follow") and d3.next_state is S.SWITCHING
    # Following: switchover done, the gate reopens, BACKUP.
    d4 = decide(obs(VrrpState.BACKUP, STANDBY, PEER_MASTER), d3.memory, CFG)
    assert d4.memory.switchover_since is None and d4.next_state is S.BACKUP


def test_switchover_releases_only_once_the_standby_no_longer_counts_itself_outdated() -> None:
    prev = replace(SEEN, state=S.SWITCHING, switchover_since=100.0)
    d = decide(obs(VrrpState.MASTER, PRIMARY, replace(PEER_BACKUP, outdated=True)), prev, CFG)
    assert d.action_kinds == () and "no longer outdated" in d.reason
    d = decide(obs(VrrpState.MASTER, PRIMARY, PEER_BACKUP), d.memory, CFG)
    assert d.action_kinds == ("CloseGate",)


def test_a_stopped_node_takes_the_outdated_mark_and_a_newer_primary_drops_it() -> None:
    # Stopped (its data may be a standby's that died before the mark): the mark is taken.
    stopped = DbStatus(DbRole.STOPPED)
    marked = replace(PEER_MASTER, outdated_lsn=700)
    d = decide(obs(VrrpState.BACKUP, stopped, marked), replace(SEEN, state=S.FAULT), CFG)
    assert d.memory.self_outdated_from == 700
    # Started, the data is a primary on a newer timeline than the peer primary's: the mark
    # was about a history that lost; it goes, and this node may be elected.
    newer = replace(PRIMARY, timeline=3, sync_standby=None, sync_names="")
    d = decide(obs(VrrpState.BACKUP, newer, replace(marked, timeline=2)), d.memory, CFG)
    assert d.memory.self_outdated_from is None
    # An older primary keeps it (it follows the peer).
    older = replace(newer, timeline=1)
    d2 = decide(obs(VrrpState.BACKUP, older, replace(marked, timeline=2)), d.memory, CFG)
    assert "Follow" in d2.action_kinds
    # A primary whose peer follows it drops a mark left from before.
    follows = replace(PEER_BACKUP, outdated=False)
    left = replace(SEEN, state=S.MASTER, self_outdated_from=5)
    d3 = decide(obs(VrrpState.MASTER, PRIMARY, follows), left, CFG)
    assert d3.memory.self_outdated_from is None and d3.next_state is S.MASTER


def test_switchover_times_out_and_serves_again() -> None:
    prev = replace(SEEN, state=S.SWITCHING, switchover_since=80.0)
    d = decide(obs(VrrpState.MASTER, PRIMARY, replace(PEER_BACKUP, lsn=1)), prev, CFG)
    assert d.next_state is S.MASTER and "aborted" in d.reason


def test_standby_does_not_veto_when_peer_serves() -> None:
    o = obs(VrrpState.BACKUP, STANDBY, PEER_MASTER)
    assert context(o, SEEN, CFG).veto is None


def test_state_table_rejects_direct_role_flip() -> None:
    with pytest.raises(IllegalTransition, match="MASTER -> BACKUP"):
        check_transition(S.MASTER, S.BACKUP)
    assert S.MASTER not in ALLOWED[S.BACKUP]
    for src, dsts in ALLOWED.items():
        for dst in dsts:
            check_transition(src, dst)


def test_standby_takes_over_from_a_faulted_primary_with_more_wal() -> None:
    # The primary's keepalived died: it is FAULT, its LSN a little ahead (non-transactional WAL).
    peer = replace(PEER_MASTER, state=S.FAULT, serving=False, lsn=5000)
    o = obs(VrrpState.BACKUP, STANDBY, peer)
    assert context(o, SEEN, CFG).veto is None
    d = decide(replace(o, vrrp=VrrpState.MASTER), SEEN, CFG)
    assert "Promote" in d.action_kinds


def test_split_brain_when_vrrp_picks_the_older_node_the_newer_keeps_its_data() -> None:
    newer = DbStatus(DbRole.PRIMARY, timeline=3, lsn=100)
    older_view = PeerView(
        True, state=S.MASTER, db_role=DbRole.PRIMARY, timeline=2, lsn=900, serving=True
    )
    d = decide(obs(VrrpState.BACKUP, newer, older_view), replace(SEEN, state=S.MASTER), CFG)
    assert d.next_state is S.SWITCHING and "Follow" not in d.action_kinds
    assert "keeping our newer data" in d.reason
    # The older side (VRRP MASTER) sees a primary with newer data and yields.
    older = DbStatus(DbRole.PRIMARY, timeline=2, lsn=900)
    newer_view = PeerView(True, state=S.SWITCHING, db_role=DbRole.PRIMARY, timeline=3, lsn=100)
    cfg_old = replace(CFG, node_name="esc-ha-0", peer_name="esc-ha-1")
    d2 = decide(
        obs(VrrpState.MASTER, older, newer_view, ON), replace(SEEN, state=S.MASTER), cfg_old
    )
    assert d2.next_state is S.FAULT and "yielding" in d2.reason


def test_a_primary_ignores_outdated_marks_from_another_primary() -> None:
    view = replace(PEER_MASTER, timeline=2, outdated_lsn=42)
    d = decide(
        obs(VrrpState.MASTER, replace(PRIMARY, timeline=3), view, ON),
        replace(SEEN, state=S.MASTER),
        CFG,
    )
    assert d.memory.self_outdated_from is None


def test_restore_sync_only_when_our_wal_sender_streams_to_the_peer() -> None:
    prev = replace(SEEN, state=S.MASTER, standby_lost_since=10.0, peer_outdated_from=500)
    async_primary = replace(PRIMARY, sync_standby=None, sync_names="")
    # The peer says it streams, but our WAL sender does not see it: stay asynchronous.
    d = decide(obs(VrrpState.MASTER, async_primary, PEER_BACKUP, ON), prev, CFG)
    assert "RestoreSync" not in d.action_kinds and "DEGRADED" in d.reason
    seen = replace(async_primary, streaming_to=("esc-ha-0",))
    d = decide(obs(VrrpState.MASTER, seen, PEER_BACKUP, ON), prev, CFG)
    assert "RestoreSync" in d.action_kinds and d.memory.standby_lost_since is None
    assert d.memory.peer_outdated_from == 500  # cleared only once it is synchronous


def test_a_standby_stopping_on_purpose_is_dropped_from_sync_at_once() -> None:
    """An upgrade or a reboot of the standby: its agent says STOP before its database goes,
    and the primary stops waiting for it at once (available), marking it outdated."""
    leaving = replace(PEER_BACKUP, state=S.STOP)
    prev = replace(SEEN, state=S.MASTER)
    d = decide(obs(VrrpState.MASTER, PRIMARY, leaving, ON), prev, CFG)
    assert d.next_state is S.MASTER and d.action_kinds == ("OpenGate", "DropSync")
    assert d.memory.peer_outdated_from == 1000
    assert "stopping on purpose" in d.reason
    # Still streaming while it shuts down: no RestoreSync flapping back and forth.
    async_primary = replace(PRIMARY, sync_standby=None, sync_names="", streaming_to=("esc-ha-0",))
    d2 = decide(obs(VrrpState.MASTER, async_primary, leaving, ON), d.memory, CFG)
    assert d2.action_kinds == ("OpenGate",) and d2.memory.peer_outdated_from == 1000
    # Back and streaming: named synchronous again; outdated until it is.
    d3 = decide(obs(VrrpState.MASTER, async_primary, PEER_BACKUP, ON), d2.memory, CFG)
    assert "RestoreSync" in d3.action_kinds
    # Under strict the primary keeps waiting: nothing may be acknowledged by one node alone.
    strict = replace(CFG, policy="strict")
    d4 = decide(obs(VrrpState.MASTER, PRIMARY, leaving, ON), prev, strict)
    assert "DropSync" not in d4.action_kinds and d4.memory.peer_outdated_from is None


@pytest.mark.parametrize(
    ("ours", "peers", "rank"),
    [
        (1, 0, 0),  # the peer never seen since start: no opinion
        (2, 2, 0),  # the same history: the configured priorities decide
        (3, 2, 2),  # promoted while the peer was cut off: outrank it
        (2, 3, -2),  # the old primary beside a newer one: never win the election back
    ],
)
def test_data_rank_weighs_the_election_by_timeline(ours: int, peers: int, rank: int) -> None:
    db = replace(PRIMARY, timeline=ours)
    peer = replace(PEER_MASTER, timeline=peers) if peers else SILENT
    d = decide(obs(VrrpState.MASTER, db, peer, ON), replace(SEEN, state=S.MASTER), CFG)
    assert d.rank == rank
    assert d.memory.peer_timeline == peers


def test_data_rank_remembers_the_peer_while_it_is_silent() -> None:
    """Cut off after a promotion, the new primary keeps outranking the old one (the heal)."""
    seen = replace(SEEN, state=S.MASTER, peer_timeline=2)
    d = decide(obs(VrrpState.MASTER, replace(PRIMARY, timeline=3), SILENT, ON), seen, CFG)
    assert d.rank == 2 and d.memory.peer_timeline == 2
    stopped = DbStatus(DbRole.STOPPED)
    d2 = decide(obs(VrrpState.FAULT, stopped, SILENT), seen, CFG)
    assert d2.rank == 0  # nothing to weigh without a running database


# --- issue 14: a history that served outranks one that never did -----------------------------

PROMOTED_UNSERVED = DbStatus(DbRole.PRIMARY, timeline=2, lsn=3000)  # esc-ha-1, just promoted
OLD_SERVING = PeerView(  # esc-ha-0, the old primary, went on serving on timeline 1
    True, state=S.MASTER, db_role=DbRole.PRIMARY, timeline=1, lsn=5000, serving=True,
    served_timeline=1,
)  # fmt: skip


def test_promoting_records_that_the_new_timeline_has_not_served_and_activating_that_it_has() -> (
    None
):
    d = decide(obs(VrrpState.MASTER, STANDBY, SILENT), SEEN, CFG)
    assert "Promote" in d.action_kinds and d.memory.served_timeline == 1  # below the new one
    promoted = obs(VrrpState.MASTER, replace(PRIMARY, timeline=2, sync_standby=None), SILENT)
    d2 = decide(promoted, d.memory, CFG)
    assert "ActivateService" in d2.action_kinds and d2.memory.served_timeline == 2


def test_a_promoted_standby_that_never_served_yields_to_the_serving_old_primary() -> None:
    prev = replace(SEEN, state=S.SWITCHING, served_timeline=1)
    d = decide(obs(VrrpState.BACKUP, PROMOTED_UNSERVED, OLD_SERVING), prev, CFG)
    assert d.rule_id == "demote" and d.action_kinds == ("CloseGate", "Follow")
    assert "data that served" in d.reason
    assert d.rank == -2  # below the old primary in any election until it serves
    # The old primary, seeing it, keeps its role and outranks it.
    cfg0 = replace(CFG, node_name="esc-ha-0", peer_name="esc-ha-1")
    unserved = PeerView(
        True, state=S.SWITCHING, db_role=DbRole.PRIMARY, timeline=2, lsn=3000, served_timeline=1
    )
    ours = DbStatus(DbRole.PRIMARY, timeline=1, lsn=5000)
    d0 = decide(obs(VrrpState.MASTER, ours, unserved, ON), replace(SEEN, state=S.MASTER), cfg0)
    assert d0.next_state is S.MASTER and "keeping the role (data that served" in d0.reason
    assert d0.rank == 2


def test_an_old_primary_that_stopped_serving_still_yields_to_the_newer_timeline() -> None:
    """A switchover: the old primary deactivated before the standby promoted; the new timeline
    holds everything, so the data decides as before (the old primary follows)."""
    handing = replace(OLD_SERVING, state=S.SWITCHING, serving=False, handing_over=True)
    prev = replace(SEEN, state=S.SWITCHING, served_timeline=1)
    d = decide(obs(VrrpState.MASTER, PROMOTED_UNSERVED, handing), prev, CFG)
    assert d.rule_id == "split-brain-keep" and d.next_state is S.MASTER
    assert "keeping the role (newer data" in d.reason
    assert d.action_kinds == ("OpenGate", "ActivateService") and d.memory.served_timeline == 2


def test_an_unknown_served_timeline_counts_as_served() -> None:
    """An older agent's view or memory says nothing: timelines decide, as before."""
    old_view = replace(OLD_SERVING, served_timeline=None)
    d = decide(
        obs(VrrpState.MASTER, PROMOTED_UNSERVED, old_view, ON), replace(SEEN, state=S.MASTER), CFG
    )
    assert d.rule_id == "split-brain-keep" and "keeping the role (newer data" in d.reason


def test_an_old_primary_back_takes_the_mark_of_a_peer_that_served_on_a_newer_timeline() -> None:
    """The old primary back from a reboot, the new one's database down (frozen): the peer says
    it served on timeline 2 and marked us outdated; ours is 1. It must not serve its older
    history (found by the simulation once the issue-14 tolerance was gone)."""
    peer = PeerView(
        True, state=S.FAULT, db_role=DbRole.STOPPED, served_timeline=2, outdated_lsn=0x3000400
    )
    old = DbStatus(DbRole.PRIMARY, timeline=1, lsn=0x3000500)
    d = decide(obs(VrrpState.MASTER, old, peer), replace(SEEN, state=S.SWITCHING), CFG)
    assert d.rule_id == "master-vetoed" and "outdated" in d.reason
    assert d.memory.self_outdated_from == 0x3000400  # persisted: survives a restart
    # Not without the mark: a strict primary that acknowledged nothing alone leaves no mark.
    unmarked = replace(peer, outdated_lsn=None)
    d2 = decide(obs(VrrpState.MASTER, old, unmarked), replace(SEEN, state=S.SWITCHING), CFG)
    assert d2.memory.self_outdated_from is None and d2.rule_id != "master-vetoed"


def test_a_rewound_standby_forgets_the_timeline_it_served_on() -> None:
    prev = replace(SEEN, served_timeline=2)
    d = decide(obs(VrrpState.BACKUP, STANDBY, PEER_MASTER), prev, CFG)
    assert d.memory.served_timeline is None
