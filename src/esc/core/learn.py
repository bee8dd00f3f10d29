"""Folding an observation into memory, before any rule is tried."""

from __future__ import annotations

from dataclasses import replace

from esc.core.facts import (
    Ctx,
    both_primary,
    peer_outranks,
    peer_serving,
    served_current,
    served_newer,
)
from esc.model import DbRole, Pause, VrrpState

HANDOVER_LIMIT_S = 60.0  # a switchover that has not completed by then is abandoned


def newer_pause(theirs: Pause, ours: Pause) -> bool:
    """The peer's maintenance record wins: a newer change, or at the same ``seq`` (each node
    changed it while they could not see each other) the paused one, the side that cannot
    fail over by mistake."""
    return theirs.seq > ours.seq or (theirs.seq == ours.seq and theirs.paused and not ours.paused)


def learn(c: Ctx) -> Ctx:
    obs, mem = c.obs, c.mem
    p = obs.peer
    new: dict[str, object] = {}  # one replace() at the end: this runs every cycle
    if not peer_serving(obs) and mem.hold_down_until:
        new["hold_down_until"] = 0.0  # the peer stopped serving: hold-down over
    mark = mem.self_outdated_from
    if p.reachable:
        if not mem.peer_seen:
            new["peer_seen"] = True
        if mem.forced:
            new["forced"] = False
        if p.pause is not None and newer_pause(p.pause, mem.pause):
            new["pause"] = p.pause  # pair-wide: paused or resumed on the peer
        if p.timeline and p.timeline != mem.peer_timeline:
            new["peer_timeline"] = p.timeline
        if p.timeline:
            unserved = p.db_role is DbRole.PRIMARY and not served_current(
                p.timeline, p.served_timeline
            )
            if unserved != mem.peer_unserved:
                new["peer_unserved"] = unserved
        # A node that is not primary takes the primary's word that it is outdated (a stopped
        # one too: its database may be a standby that died before the mark). In a split brain
        # both are primaries and the data decides who loses, not the marks; the loser then
        # takes the winner's word too, or, the winner dead, it would serve its older data
        # again over the writes the winner acknowledged alone.
        loser = both_primary(obs) and peer_outranks(c)
        if p.db_role is DbRole.PRIMARY and (obs.db.role is not DbRole.PRIMARY or loser):
            mark = p.outdated_lsn
        elif (
            p.db_role is not DbRole.PRIMARY
            and p.outdated_lsn is not None
            and served_newer(c)
            and not obs.service.active
        ):
            # Its database down (stopped, frozen, restarting), the peer still says it served
            # on a newer timeline than our data's and marked us: an old primary back from a
            # reboot takes that word too, or it would serve its older history. Not one that
            # serves: the peer, its database starting, follows a serving node.
            mark = p.outdated_lsn
        # A mark taken while stopped may have been about a history that, once started, is the
        # newer primary's: a primary whose peer follows it, or whose data outranks the peer
        # primary's, is not outdated by anything that peer said.
        if obs.db.role is DbRole.PRIMARY and mark is not None:
            follows_us = p.db_role is DbRole.STANDBY
            if follows_us or (both_primary(obs) and not peer_outranks(c)):
                mark = None
    elif p.last_outdated_lsn is not None and obs.db.role is not DbRole.PRIMARY:
        # The peer is silent, and its last word as primary was "you are outdated": a
        # standby whose agent was stuck while its poller heard that must not forget it.
        mark = p.last_outdated_lsn
    if mark != mem.self_outdated_from:
        new["self_outdated_from"] = mark
    # Serving as primary: writes may be acknowledged on this timeline (decide() records it
    # already when it activates the service; this catches a service found active).
    db, served = obs.db, mem.served_timeline
    if db.is_running and db.timeline > mem.top_timeline:
        new["top_timeline"] = db.timeline
    serving = obs.service.active and db.role is DbRole.PRIMARY
    if serving and served is not None and served < db.timeline:
        new["served_timeline"] = db.timeline
    # A standby on an older timeline than the one it served on was rewound to follow the
    # winner of a split brain: what it served is in its dump now, not in its data.
    rewound = db.role is DbRole.STANDBY and db.is_running and db.timeline
    if rewound and served is not None and served > db.timeline:
        new["served_timeline"] = None
    if mem.switchover_since is not None:
        handed = obs.db.role is DbRole.STANDBY and obs.vrrp is not VrrpState.MASTER
        # Handed over and following: done. Or the peer never took over (it died
        # mid-switchover): stop vetoing ourselves.
        if handed or obs.now - mem.switchover_since > HANDOVER_LIMIT_S:
            new["switchover_since"] = None
    if not new:
        return c
    return Ctx(obs, replace(mem, **new), c.cfg)  # type: ignore[arg-type]
