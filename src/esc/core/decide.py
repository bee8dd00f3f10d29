"""The agent's decision: one pure function from an observation to a decision.

No I/O, no clock, no sleeping in this package. ``decide(obs, prev, cfg)`` learns from the
observation (learn.py), computes the veto (veto.py), fires the first rule of the mode's rule
set whose condition holds (rules.py) and checks the rule's edge against the state table
(table.py: an illegal edge raises, nothing reroutes it). The ``Decision`` carries the rule's
id, the actions to execute in order (each idempotent), one sentence saying why, the memory
for the next cycle, the data rank for keepalived, whether to announce the anycast route and
which node serves as far as this one knows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from esc.core.facts import Ctx, DecideConfig, served_current
from esc.core.learn import learn
from esc.core.quorum import may_lead, sync_mark_after
from esc.core.rule import Rule
from esc.core.rules import INDEX
from esc.core.table import check_transition
from esc.core.veto import veto
from esc.errors import IllegalTransition
from esc.model import (
    Action,
    ActivateService,
    CloseGate,
    DbRole,
    DbStatus,
    Decision,
    Memory,
    NodeState,
    Observation,
    OpenGate,
    Promote,
)

RANK_STEP = 2  # data_rank: more than the one point between the two configured priorities


def context(obs: Observation, prev: Memory, cfg: DecideConfig) -> Ctx:
    """The context the rules see: memory after learning, and the veto."""
    c = learn(Ctx(obs, prev, cfg))
    return Ctx(obs, c.mem, cfg, veto(c))


def first_rule(c: Ctx) -> Rule:
    """The first rule of the mode's set that can fire here and whose condition holds."""
    for r in INDEX[c.cfg.mode][c.obs.vrrp, c.obs.db.role]:
        if r.when(c):
            return r
    raise IllegalTransition(c.state, "?", f"no rule for {c.obs.vrrp.value}, {c.obs.db.role}")


def decide(obs: Observation, prev: Memory, cfg: DecideConfig) -> Decision:
    """One cycle's decision. Its state is the firing rule's edge from ``prev.state``."""
    c = context(obs, prev, cfg)
    rule = first_rule(c)
    t = rule.then(c)
    nxt = rule.edges.get(prev.state)
    if nxt is None:
        raise IllegalTransition(prev.state, "?", f"rule {rule.id} has no edge from it")
    check_transition(prev.state, nxt, f"rule {rule.id}: {t.reason}")
    opened = t.mem.gate_opened_at
    if any(isinstance(a, CloseGate) for a in t.actions):
        opened = None
    elif not obs.gate_open and any(isinstance(a, OpenGate) for a in t.actions):
        opened = obs.now
    mem = t.mem
    served = served_after(obs, t.actions, mem.served_timeline)
    if mem.state is not nxt or mem.gate_opened_at != opened or mem.served_timeline != served:
        mem = replace(mem, state=nxt, gate_opened_at=opened, served_timeline=served)
    mem = sync_mark_after(obs, exposure_after(obs, mem))
    return Decision(
        nxt,
        tuple(t.actions),
        t.reason,
        mem,
        data_rank(obs, mem),
        rule_id=f"{rule.id}/{t.sub}" if t.sub else rule.id,
        announce=nxt is NodeState.MASTER,
        primary=serving_node(obs, nxt, cfg),
        campaign=may_lead(c),
    )


def served_after(obs: Observation, actions: Sequence[Action], served: int | None) -> int | None:
    """The newest timeline served on, after these actions (persisted before they run).

    Promoting: the new timeline has not served yet, so the mark stays below it (the current
    timeline, the new one being higher). Activating the service as a primary: this timeline
    served. A service found active is caught by learn()."""
    if any(isinstance(a, Promote) for a in actions):
        return obs.db.timeline
    if obs.db.role is DbRole.PRIMARY and any(isinstance(a, ActivateService) for a in actions):
        return obs.db.timeline if served is None else max(served, obs.db.timeline)
    return served


def exposure_after(obs: Observation, mem: Memory) -> Memory:
    """What a primary without its synchronous standby risks, for ``escadm ha status`` (no rule
    reads it). From the cycle the standby is first missed, the oldest transaction still running
    bounds the ids of every write that may be acknowledged alone (a commit waiting for the
    standby still runs). The outdated mark starts the "acknowledged alone" clock. Both end when
    the standby is back (neither lost nor outdated) and survive an agent restart meanwhile."""
    if mem.standby_lost_since is None and mem.peer_outdated_from is None:
        if mem.alone_from_xid is None and mem.alone_since is None:
            return mem
        return replace(mem, alone_from_xid=None, alone_since=None)
    xid, since = mem.alone_from_xid, mem.alone_since
    if xid is None and obs.db.role is DbRole.PRIMARY and obs.db.xid_xmin:
        xid = obs.db.xid_xmin
    if since is None and mem.peer_outdated_from is not None:
        since = obs.wall
    if xid == mem.alone_from_xid and since == mem.alone_since:
        return mem
    return replace(mem, alone_from_xid=xid, alone_since=since)


def alone_transactions(db: DbStatus, mem: Memory) -> int | None:
    """At most this many write transactions were acknowledged alone (the ids from the oldest
    running when the standby was lost up to the newest completed), or None when not exposed or
    not known."""
    if mem.peer_outdated_from is None or mem.alone_from_xid is None or not db.xid_xmax:
        return None
    return max(0, db.xid_xmax - mem.alone_from_xid)


def serving_node(obs: Observation, nxt: NodeState, cfg: DecideConfig) -> str | None:
    """The node that serves, as far as this one knows: itself as MASTER, the peer when it says
    it serves, else None (an inactive manager names it in its 503 answers)."""
    if nxt is NodeState.MASTER:
        return cfg.node_name
    return cfg.peer_name if obs.peer.reachable and obs.peer.serving else None


def data_rank(obs: Observation, mem: Memory) -> int:
    """What this node's data adds to its VRRP priority: +RANK_STEP when it outranks what the
    peer last reported, -RANK_STEP when it is outranked, else 0. The order is
    ``peer_outranks``'s, from memory (the peer may be silent now): a primary that never served
    on its timeline below any other history, then the newer timeline.

    A standby promoted while the primary was cut off is on a newer timeline: once it serves it
    outranks the old primary even though the old one has the higher configured priority (101
    against 100, one step apart), so when the partition heals keepalived keeps the VIP on the
    new primary and the old one goes BACKUP at the first advert it hears, instead of winning
    the election back and acknowledging writes on a history that is about to be rewound
    (issue 14). Before it serves, its new timeline holds no acknowledged write and the old
    primary, which may have gone on serving, keeps the election. The step is 2 so that it
    always beats the one point between the configured priorities; only the sign of the
    comparison counts, so timelines can grow without bound."""
    db = obs.db
    if not db.is_running or not db.timeline or not mem.peer_timeline:
        return 0
    unserved = db.role is DbRole.PRIMARY and not served_current(db.timeline, mem.served_timeline)
    ours = (not unserved, db.timeline)
    theirs = (not mem.peer_unserved, mem.peer_timeline)
    if ours == theirs:
        return 0
    return RANK_STEP if ours > theirs else -RANK_STEP
