"""Frozen values shared by the agent, its drivers and escadm. No I/O in this module.

Enum values are published (state file, JSON status, history): never rename or renumber them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import ClassVar


def fmt_lsn(lsn: int) -> str:
    """PostgreSQL's spelling of an LSN: 50331744 -> '0/3000060'."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


class NodeState(StrEnum):
    """What the node is, as written to ``keepalived_state``."""

    MASTER = "MASTER"  # serving: VIP (or anycast route), primary database, active service
    BACKUP = "BACKUP"  # standby: database following the primary, service inactive
    SWITCHING = "SWITCHING"  # between roles, or waiting (cold boot without the peer)
    FAULT = "FAULT"  # cannot serve: keepalived dead, gateway lost, service broken, link down
    STOP = "STOP"  # the agent was stopped on purpose


class VrrpState(StrEnum):
    """keepalived's own view, from its notify events."""

    INIT = "INIT"  # started, no transition yet
    BACKUP = "BACKUP"
    MASTER = "MASTER"
    FAULT = "FAULT"
    STOP = "STOP"
    DEAD = "DEAD"  # no keepalived process


class DbRole(StrEnum):
    PRIMARY = "primary"
    STANDBY = "standby"
    STOPPED = "stopped"
    ABSENT = "absent"  # no data directory yet


@dataclass(frozen=True)
class DbStatus:
    """One look at the local PostgreSQL."""

    role: DbRole
    timeline: int = 0
    lsn: int = 0  # primary: current write LSN; standby: replay LSN
    receive_lsn: int = 0  # standby: last WAL received (flush), 0 on a primary
    streaming: bool = False  # standby: a WAL receiver is streaming from the primary
    sync_standby: str | None = None  # primary: application_name of the sync standby, if any
    sync_names: str = ""  # primary: current synchronous_standby_names ('' = async)
    replay_lag_s: float = 0.0  # standby: seconds since last replayed transaction (0 if idle)
    streaming_to: tuple[str, ...] = ()  # primary: standbys whose WAL sender is streaming
    # primary: its current snapshot's bounds. Every completed transaction has an id below
    # xid_xmax (an acknowledged commit is completed); every running one an id at or above
    # xid_xmin (a commit waiting for the synchronous standby still runs). 0 on a standby.
    xid_xmax: int = 0
    xid_xmin: int = 0

    @property
    def is_running(self) -> bool:
        return self.role in (DbRole.PRIMARY, DbRole.STANDBY)


@dataclass(frozen=True)
class Pause:
    """The pair's maintenance mode (``escadm ha pause`` / ``resume``): while ``paused``, no
    automatic failover or demotion (core/veto.py ``PAUSED``). Pair-wide: each change takes a
    ``seq`` above both nodes' and the newer record wins on both (core/learn.py); at the same
    ``seq`` (two changes while the nodes could not see each other) paused wins."""

    paused: bool = False
    seq: int = 0  # 0: never paused or resumed
    by: str = ""  # who asked, and on which node ("escadm on esc-ha-0")
    at: float | None = None  # epoch seconds of the change


@dataclass(frozen=True)
class PeerView:
    """What the peer agent last told us (its peer endpoint), or that it is silent."""

    reachable: bool
    silent_for: float = 0.0  # seconds since the last answer (inf if never)
    state: NodeState | None = None
    db_role: DbRole | None = None
    timeline: int = 0
    lsn: int = 0
    serving: bool = False  # peer's service is active
    outdated_lsn: int | None = None  # peer (as primary) marked us outdated from this LSN
    outdated: bool = False  # peer (as standby) holds a mark that it is outdated (it saw ours)
    tells_outdated: bool = False  # its view has ``outdated`` at all (an older agent's has not)
    # Seconds since the peer's agent last published a new cycle (its view is served by another
    # thread: an agent stuck in a slow call still answers, with a stale view). 0 for an agent
    # that does not say (older than this field).
    agent_silent_for: float = 0.0
    # The mark the peer, as primary, put on us in the last view we got, kept while the peer is
    # silent: a standby whose agent was stuck when the primary died still learns it.
    last_outdated_lsn: int | None = None
    vip_held: bool = False
    streaming: bool = False  # peer (as standby) is receiving WAL from us
    handing_over: bool = False  # peer (as primary) is in a planned switchover to us
    receive_lsn: int = 0  # peer (as standby): WAL received; lsn is what it replayed
    replay_lag_s: float = 0.0  # peer (as standby): seconds behind in replay
    announced: bool = False  # peer announces the anycast route (BGP)
    reason: str = ""  # the peer's last decision, in its words (for status and the portal)
    # The newest timeline the peer served on (Memory.served_timeline); None when it does not
    # say (an older agent) or does not know: counts as served on its timeline.
    served_timeline: int | None = None
    # persisted: the newest timeline this node's database has been on. A node rewound off its
    # own newer timeline (it lost a split brain) no longer has that timeline's history file,
    # and PostgreSQL would open the same id again at its next promotion (Promote.above).
    top_timeline: int = 0
    # The pair's maintenance mode as the peer holds it (Memory.pause, core/learn.py adopts the
    # newer one). None: the peer's view has no pause at all (an agent older than the field,
    # which does not know maintenance mode: it would fail over).
    pause: Pause | None = None
    # Bytes free for the database on the peer's data filesystem (Observation.disk_free). None:
    # not measured, or an agent older than the field: a node full or not, nothing is handed
    # to it on a full disk (rule disk-full-handover).
    disk_free: int | None = None


@dataclass(frozen=True)
class ServiceView:
    active: bool
    healthy: bool
    failures: int = 0  # consecutive failed health checks


@dataclass(frozen=True)
class SyncRecord:
    """Quorum mode: etcd's record of the pair (its sync key, Patroni's design). ``primary`` is
    the node that serves or last served; ``sync`` the standby that has every write it
    acknowledged ("" for none: it acknowledges alone). Only these two may take the leader key;
    the primary changes the record, with a compare-and-swap as the leader-key holder, before it
    drops its standby from synchronous replication."""

    primary: str
    sync: str = ""

    def names(self, node: str) -> bool:
        return bool(node) and node in (self.primary, self.sync)


@dataclass(frozen=True)
class QuorumObs:
    """Quorum mode: the quorum keeper's last look (``esc.drivers.quorum``)."""

    reachable: bool  # the last etcd call answered
    holder: bool  # this node holds the leader key under a lease it can still count on
    leader: str | None = None  # who holds the leader key (None: nobody, or not known)
    sync: SyncRecord | None = None  # the recorded pair (None: never written)
    sync_revision: int = 0  # the record's revision in etcd, for the compare-and-swap
    serve_left: float = 0.0  # holder: seconds before it must have stopped serving
    error: str = ""  # why the last etcd call failed
    # Not a holder: seconds until this node may take the leader key (0: free, or unchanged a
    # whole lease since it first saw the holder's last renewal; inf: not known).
    takeover_in: float = math.inf


@dataclass(frozen=True)
class Observation:
    """Everything one agent cycle decides on, read once at the start of the cycle."""

    now: float  # monotonic seconds
    vrrp: VrrpState
    vip_held: bool
    db: DbStatus
    service: ServiceView
    peer: PeerView
    gateway_ok: bool | None = None  # None: no gateway configured
    gate_open: bool = False  # what the track file said when this observation was taken
    busy: str | None = None  # a long action under way ("following esc-ha-0"): no database look
    wall: float = 0.0  # the wall clock (epoch seconds), for what is shown to operators only
    quorum: QuorumObs | None = None  # quorum mode only
    # The agent's own fault, in words (None: none): its memory file cannot be trusted, or its
    # cycles keep failing (agent/loop.py). The node goes FAULT and gives up the VIP (rule
    # agent-fault) until the cause is gone.
    fault: str | None = None
    # Bytes free for the database (PostgreSQL's user, not root's reserve) on the filesystem of
    # its data directory, or of its WAL if that is another one: the smaller. None: not
    # measured (no data directory yet, or the look failed).
    disk_free: int | None = None


# --- actions: verbs, executed in order by agent/execute.py, each idempotent ----------------


@dataclass(frozen=True)
class Action:
    # A role change is under way after this action: the agent runs its next cycle at once
    # (agent/loop.py, up to MAX_BACK_TO_BACK in a row), so the failover path has no polling step.
    hurries: ClassVar[bool] = False

    @property
    def kind(self) -> str:
        return type(self).__name__


@dataclass(frozen=True)
class OpenGate(Action):
    """Tell keepalived this node may hold the VIP (track file 0)."""


@dataclass(frozen=True)
class CloseGate(Action):
    """Veto holding the VIP (track file non-zero: keepalived goes FAULT, VIP released)."""


@dataclass(frozen=True)
class InitPrimary(Action):
    """First boot of the pair: create the database on this node."""

    hurries = True


@dataclass(frozen=True)
class StartDb(Action):
    """Start the local database in whatever role its data directory holds."""

    hurries = True


@dataclass(frozen=True)
class Promote(Action):
    """Make the local database the primary, on a timeline above ``above_timeline`` (the
    newest the peer reported): a standby that never streamed the peer's newer timeline does
    not know its id, and PostgreSQL would open the same id again over another history."""

    hurries = True

    above_timeline: int = 0


@dataclass(frozen=True)
class Follow(Action):
    """Make the local database a streaming standby of ``primary`` (rewind or re-clone)."""

    hurries = True

    primary: str


@dataclass(frozen=True)
class ActivateService(Action):
    hurries = True


@dataclass(frozen=True)
class DeactivateService(Action):
    hurries = True


@dataclass(frozen=True)
class RemoveVip(Action):
    """A killed keepalived leaves the VIP on the interface; remove it ourselves."""

    hurries = True


@dataclass(frozen=True)
class RestartVrrp(Action):
    hurries = True


@dataclass(frozen=True)
class DropSync(Action):
    """Policy ``available``: stop waiting for the lost standby; record it as outdated."""

    hurries = True

    from_lsn: int


@dataclass(frozen=True)
class RestoreSync(Action):
    """The standby caught up: name it synchronous again and clear its outdated mark."""

    hurries = True


@dataclass(frozen=True)
class RecordSync(Action):
    """Quorum mode: swap etcd's record of the pair to ``record``, from the revision the cycle
    read (so a record changed meanwhile is not overwritten). Carried out by the quorum keeper
    only while this node holds the leader key; the next views show the outcome. It does not
    hurry the next cycle: the keeper wakes the cycle when its view changes."""

    record: SyncRecord
    from_revision: int


@dataclass(frozen=True)
class Memory:
    """What the agent carries from one cycle to the next. ``decide`` returns the new one.

    Fields marked *persisted* survive an agent restart (agent_memory.json in the data dir).
    """

    state: NodeState = NodeState.STOP
    peer_seen: bool = False  # the peer answered at least once since this agent started
    forced: bool = False  # persisted: an operator forced this node primary
    standby_lost_since: float | None = None  # as primary: no sync standby since (monotonic)
    peer_outdated_from: int | None = None  # persisted, as primary: peer left sync at this LSN
    self_outdated_from: int | None = None  # persisted, as standby: primary said we are outdated
    switchover_since: float | None = None  # handing the primary role to the peer since
    gate_opened_at: float | None = None  # when the gate was last opened (keepalived lags)
    hold_down_until: float = 0.0  # gate closed until then while the peer serves (VRRP split)
    peer_timeline: int = 0  # the timeline the peer last reported (0: not seen since start)
    peer_unserved: bool = False  # ... as a primary that never served on it (data_rank)
    # persisted: the newest timeline on which this node, as primary, served (its service was
    # active, so it may have acknowledged writes there). None: not known (a node started with
    # an older agent's memory, or never promoted by this agent), which counts as "served on its
    # timeline", as before this field. Set below the new timeline when promoting, to it when
    # activating the service (core/facts.served_current).
    served_timeline: int | None = None
    # persisted: the newest timeline this node's database has been on. A node rewound off its
    # own newer timeline (it lost a split brain) no longer has that timeline's history file,
    # and PostgreSQL would open the same id again at its next promotion (Promote.above).
    top_timeline: int = 0
    # persisted, as primary: the exposure while the standby is lost or outdated, for operators
    # (no rule reads it). alone_since: wall time of the outdated mark (writes acknowledged alone
    # from then on); alone_from_xid: the oldest transaction still running when the standby was
    # first missed, so every write transaction acknowledged alone has an id at or above it.
    alone_since: float | None = None
    alone_from_xid: int | None = None
    # Quorum mode, as primary: our LSN when the peer was first seen as the synchronous standby.
    # Writes acknowledged before then may not have reached it: it is recorded as the sync member
    # in etcd only once it has replayed up to here.
    sync_from_lsn: int | None = None
    # persisted: the pair's maintenance mode (Pause), this node's copy.
    pause: Pause = Pause()
    # persisted: a scheduled switchover (``escadm ha switchover --at``): epoch seconds, and who
    # scheduled it; run by the cycle at that time through the switchover's admission
    # (core/requests.due_switchover). switchover_note: what the last one did (status).
    switchover_at: float | None = None
    switchover_at_by: str = ""
    switchover_note: str = ""


@dataclass(frozen=True)
class Decision:
    next_state: NodeState
    actions: tuple[Action, ...]
    reason: str
    memory: Memory = field(default_factory=Memory)
    # Added to keepalived's priority (track_file esc_rank): the node with the newer history
    # outranks the other in an election, whatever the configured priorities
    # (core/decide.data_rank).
    rank: int = 0
    rule_id: str = ""  # the rule that fired (core/rules.py), "rule/sub-rule" where one applied
    announce: bool = False  # the anycast route is announced (only by a MASTER)
    primary: str | None = None  # the node that serves as far as this one knows
    campaign: bool = False  # quorum mode: take (or keep) the leader key

    @property
    def action_kinds(self) -> tuple[str, ...]:
        return tuple(a.kind for a in self.actions)
