"""What one decision is made from: the configuration, the context of a cycle, and the facts
the rules test. Pure: no I/O, no clock."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from esc.model import (
    Action,
    DbRole,
    DbStatus,
    DeactivateService,
    Memory,
    NodeState,
    Observation,
    PeerView,
    ServiceView,
    VrrpState,
    fmt_lsn,
)

__all__ = ["Ctx", "DecideConfig", "Mode", "fmt_lsn"]

if TYPE_CHECKING:
    from esc.core.veto import Veto

Mode = Literal["replicated", "shared"]


@dataclass(frozen=True)
class DecideConfig:
    node_name: str
    peer_name: str
    first_node: bool  # owns the first address of ha_node_list: creates the database at first boot
    policy: Literal["strict", "available"] = "available"
    standby_loss_grace_s: float = 5.0
    health_failures: int = 3
    # A peer agent that has not published a new cycle for this long is stuck (its keepalived
    # drops it for the same reason: agent.heartbeat_timeout_s).
    peer_agent_timeout_s: float = 1.5
    hold_down_s: float = 30.0
    switchover_timeout_s: float = 10.0
    gateway: str | None = None
    # "replicated": each node has its database, the standby streams from the primary.
    # "shared" (ha_mode cinder): one database on a shared volume; "standby" means "not
    # attached here", "follow" means "release the volume", no replication policy applies.
    # Each mode has its own rule set (rules.RULES).
    mode: Mode = "replicated"
    # ha.quorum = "etcd": a node serves only while it holds etcd's leader key, and promotes or
    # drops its standby from sync only as etcd's record of the pair allows (core/quorum.py).
    quorum: bool = False
    # Quorum mode: a standby that may take the leader key opens its gate this long before it
    # can (keepalived's election, about 4 adverts from leaving FAULT, plus two cycles), so
    # that it holds the VIP when it takes the key instead of starting the election then.
    vrrp_lead_s: float = 1.0
    # database.min_free_mb in bytes: a primary with less free space for its database hands
    # the role to a standby that has room (rule disk-full-handover). 0: not watched.
    min_free_bytes: int = 0


@dataclass(frozen=True)
class Ctx:
    """One cycle's decision context: the observation, the memory after learning from it, the
    state the node is in, and the veto (None: may hold the VIP)."""

    obs: Observation
    mem: Memory
    cfg: DecideConfig
    veto: Veto | None = None

    @property
    def state(self) -> NodeState:
        return self.mem.state

    @property
    def both_primary(self) -> bool:
        return both_primary(self.obs)

    @property
    def peer_serving(self) -> bool:
        return peer_serving(self.obs)

    @property
    def quiet(self) -> list[Action]:
        """Deactivate the service if it is active (actions are idempotent, this avoids noise)."""
        return [DeactivateService()] if self.obs.service.active else []


def disk_low(c: Ctx) -> bool:
    """This node's database filesystem has less free space than database.min_free_mb."""
    free = c.obs.disk_free
    return c.cfg.min_free_bytes > 0 and free is not None and free < c.cfg.min_free_bytes


def peer_has_room(c: Ctx) -> bool:
    """The peer says it has at least database.min_free_mb free (an agent that does not say,
    an older one, has none as far as a handover is concerned)."""
    free = c.obs.peer.disk_free
    return free is not None and free >= c.cfg.min_free_bytes


def fmt_mb(n: int | None) -> str:
    return "?" if n is None else f"{n / (1 << 20):.0f} MB"


def unobserved(now: float, wall: float, fault: str) -> Observation:
    """What a cycle decides on when the agent could not even observe (its drivers raise): the
    worst is assumed where it matters, the VIP held and the service active, so that rule
    agent-fault gives both up; nothing is known of keepalived, the database or the peer."""
    return Observation(
        now=now,
        wall=wall,
        vrrp=VrrpState.DEAD,
        vip_held=True,
        db=DbStatus(DbRole.STOPPED),
        service=ServiceView(active=True, healthy=False),
        peer=PeerView(False, silent_for=float("inf")),
        fault=fault,
    )


def peer_desc(obs: Observation, timed: bool = True) -> str:
    """'peer silent 1.1s' / 'peer MASTER'. Untimed for steady-state sentences, which are logged
    only when they change."""
    p = obs.peer
    if not p.reachable:
        return f"peer silent {p.silent_for:.1f}s" if timed else "peer silent"
    return f"peer {p.state.value if p.state else '?'}"


def served_current(timeline: int, served_timeline: int | None) -> bool:
    """A primary on ``timeline`` may have acknowledged writes on it: it served there, or it
    does not know (None: an older agent's memory or view), which counts as served."""
    return served_timeline is None or served_timeline >= timeline


def served_newer(c: Ctx) -> bool:
    """The peer says it served on a newer timeline than our database's (so our data lacks
    what it may have acknowledged there)."""
    served, ours = c.obs.peer.served_timeline, c.obs.db.timeline
    return served is not None and ours > 0 and served > ours


def unserved(c: Ctx) -> tuple[bool, bool]:
    """(ours, the peer's): a primary that never served on its timeline (promoted, service never
    activated there: no write a client was told about is on it beyond the promotion)."""
    p, db = c.obs.peer, c.obs.db
    ours = db.role is DbRole.PRIMARY and not served_current(db.timeline, c.mem.served_timeline)
    theirs = p.db_role is DbRole.PRIMARY and not served_current(p.timeline, p.served_timeline)
    return ours, theirs


def served_decides(c: Ctx) -> bool | None:
    """Whether serving decides a split brain: True if the peer wins by it, False if we do,
    None if it does not decide. A primary that is serving beats one that never served on its
    timeline: a standby promoted while the primary was cut off, whose keepalived lost the
    election back before its service was activated, holds no acknowledged write the serving
    primary lacks, which may have acknowledged many since; comparing timelines alone would
    throw those into a dump (issue 14). Serving *now*: an old primary that stopped (a
    switchover handing over, a failed service) leaves the decision to the data."""
    ours, theirs = unserved(c)
    if ours and not theirs and c.obs.peer.serving:
        return True
    if theirs and not ours and c.obs.service.active:
        return False
    return None


def peer_outranks(c: Ctx) -> bool:
    """Whose data wins a split brain: the serving primary over one that never served
    (``served_decides``), else the newer timeline, the further LSN, the name (so exactly one
    side wins)."""
    by_serving = served_decides(c)
    if by_serving is not None:
        return by_serving
    p, db = c.obs.peer, c.obs.db
    return (p.timeline, p.lsn, c.cfg.peer_name) > (db.timeline, db.lsn, c.cfg.node_name)


def winning_data(c: Ctx) -> str:
    """Why the winner of a split brain wins, in words: 'newer data', or 'data that served'
    when the loser's timeline never served (``served_decides``)."""
    return "newer data" if served_decides(c) is None else "data that served"


def both_primary(obs: Observation) -> bool:
    """Both databases are primaries: a failover the old primary has not learned of yet, or a
    split brain. Exactly one side outranks the other (``peer_outranks``)."""
    return (
        obs.db.role is DbRole.PRIMARY and obs.peer.reachable and obs.peer.db_role is DbRole.PRIMARY
    )


def peer_serving(obs: Observation) -> bool:
    p = obs.peer
    return p.reachable and p.state is NodeState.MASTER and p.serving


def sync_member(c: Ctx) -> bool:
    """Quorum mode: etcd records this node as the pair's synchronous standby."""
    q = c.obs.quorum
    return q is not None and q.sync is not None and q.sync.sync == c.cfg.node_name


def recorded_here(c: Ctx) -> bool:
    """Quorum mode: etcd's record says this database has every acknowledged write: it is
    recorded as the primary and is one, or as the synchronous standby. (A standby recorded
    as the primary is not: it was demoted and may lag.)"""
    q, me = c.obs.quorum, c.cfg.node_name
    if q is None or q.sync is None:
        return False
    if c.obs.db.role is DbRole.PRIMARY:
        return me in (q.sync.primary, q.sync.sync)
    return c.obs.db.role is DbRole.STANDBY and q.sync.sync == me
