"""The rules of a node that keepalived elected MASTER: resolve a split brain by data, hand
over on a switchover, refuse the VIP while the peer serves, promote, serve and apply the
standby policy (``POLICY``, sub-rules of ``serve``)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

from esc.core.facts import (
    Ctx,
    disk_low,
    fmt_lsn,
    fmt_mb,
    peer_desc,
    peer_has_room,
    peer_outranks,
    winning_data,
)
from esc.core.quorum import lease_ok, record_peer, unsync, unsync_note
from esc.core.requests import switchover_refusal
from esc.core.rule import Rule, Then, to, via, where
from esc.core.veto import Veto, render
from esc.model import (
    Action,
    ActivateService,
    CloseGate,
    DbRole,
    NodeState,
    OpenGate,
    Promote,
    RestoreSync,
    VrrpState,
)

S = NodeState


def _activate(c: Ctx) -> list[Action]:
    return [] if c.obs.service.active else [ActivateService()]


# --- split brain ------------------------------------------------------------------------------


def _yield(c: Ctx) -> Then:
    p = c.obs.peer
    return Then(
        [CloseGate(), *c.quiet],
        f"split brain: {c.cfg.peer_name} is also primary with {winning_data(c)} (timeline "
        f"{p.timeline}, LSN {fmt_lsn(p.lsn)}); yielding, our diverged writes will be preserved",
        c.mem,
    )


def _keep(c: Ctx) -> Then:
    db = c.obs.db
    return Then(
        [OpenGate(), *_activate(c)],
        f"split brain: {c.cfg.peer_name} is also primary; keeping the role ({winning_data(c)}: "
        f"timeline {db.timeline}, LSN {fmt_lsn(db.lsn)})",
        c.mem,
    )


# --- a planned switchover -----------------------------------------------------------------------


def _overdue(c: Ctx) -> bool:
    return c.obs.now - (c.mem.switchover_since or 0.0) > c.cfg.switchover_timeout_s


def _abort(c: Ctx) -> Then:
    late = f"switchover aborted: {c.cfg.peer_name} did not catch up in "
    late += f"{c.cfg.switchover_timeout_s:.0f}s"
    mem = replace(c.mem, switchover_since=None)
    if not lease_ok(c):  # quorum mode: the leader key was given up for the peer to take
        return Then([CloseGate(), *c.quiet], f"{late}; not serving without the leader key", mem)
    return Then([OpenGate(), ActivateService()], f"{late}; serving again", mem)


def _caught_up(c: Ctx) -> bool:
    p = c.obs.peer
    return p.reachable and p.streaming and p.lsn >= c.obs.db.lsn


def _release(c: Ctx) -> Then:
    lsn = fmt_lsn(c.obs.peer.lsn)
    return Then(
        [*c.quiet, CloseGate()],
        f"switchover: {c.cfg.peer_name} caught up at LSN {lsn}; releasing the VIP",
        c.mem,
    )


def _release_volume(c: Ctx) -> Then:
    return Then(
        [*c.quiet, CloseGate()],
        f"switchover: writes quiesced; releasing the VIP and the volume to {c.cfg.peer_name}",
        c.mem,
    )


def _wait_mark(c: Ctx) -> Then:
    return Then(
        c.quiet,
        f"switchover: {c.cfg.peer_name} caught up; waiting for it to see it is no longer "
        "outdated (it would veto itself when elected)",
        c.mem,
    )


def _wait_catch_up(c: Ctx) -> Then:
    return Then(
        c.quiet,
        f"switchover: writes quiesced, waiting for {c.cfg.peer_name} to reach LSN "
        f"{fmt_lsn(c.obs.db.lsn)} (at {fmt_lsn(c.obs.peer.lsn)})",
        c.mem,
    )


# --- taking the role ----------------------------------------------------------------------------


def _hold_down(c: Ctx) -> Then:
    hold = c.cfg.hold_down_s
    return Then(
        [CloseGate()],
        f"keepalived elected us but {c.cfg.peer_name} still serves (VRRP partition?): "
        f"refusing the VIP while it serves (retry in {hold:.0f}s)",
        replace(c.mem, hold_down_until=c.obs.now + hold),
    )


def _refuse(c: Ctx) -> Then:
    assert c.veto is not None
    return Then([CloseGate(), *c.quiet], f"not taking the VIP: {render(c.veto, c)}", c.mem)


def _promote_reason(c: Ctx) -> str:
    db = c.obs.db
    lag = max(0, db.receive_lsn - db.lsn)
    return f"promoting self: keepalived MASTER, {peer_desc(c.obs)}, replay lag {lag} B"


def _await_lease(c: Ctx) -> Then:
    q = c.obs.quorum
    left = f"{q.takeover_in:.1f} s" if q is not None and q.takeover_in < math.inf else "?"
    holder = q.leader if q is not None and q.leader else "nobody"
    return Then(
        [*c.quiet],
        f"keepalived MASTER: taking the leader key ({holder} holds it; takeover in {left})",
        c.mem,
    )


def _alone(c: Ctx) -> bool:
    """Policy available, and the old primary is gone (not a reachable standby): waiting for it
    would block every write after the failover."""
    p = c.obs.peer
    return c.cfg.policy == "available" and not (p.reachable and p.db_role is DbRole.STANDBY)


def _promote_alone(c: Ctx) -> Then:
    lsn = c.obs.db.receive_lsn
    return Then(
        [OpenGate(), Promote(_above(c)), *unsync(c, lsn)],
        f"{_promote_reason(c)}; {c.cfg.peer_name} outdated from LSN {fmt_lsn(lsn)}",
        replace(c.mem, peer_outdated_from=lsn, standby_lost_since=None),
    )


def _promote(c: Ctx) -> Then:
    return Then([OpenGate(), Promote(_above(c))], _promote_reason(c), c.mem)


def _above(c: Ctx) -> int:
    """The timeline a promotion must open above: the newest the peer reported or our own
    database has been on (Memory.top_timeline)."""
    return max(c.mem.peer_timeline, c.mem.top_timeline)


def _take_volume(c: Ctx) -> Then:
    return Then(
        [OpenGate(), Promote()],
        f"taking over the shared volume: keepalived MASTER, {peer_desc(c.obs)}",
        c.mem,
    )


# --- serving: the standby policy ----------------------------------------------------------------


@dataclass(frozen=True)
class PolicyRule:
    """A sub-rule of ``serve``: (actions, a note for the reason, memory)."""

    id: str
    summary: str
    when: Callable[[Ctx], bool]
    then: Callable[[Ctx], tuple[list[Action], str, Ctx]]


def _lost(c: Ctx) -> tuple[Ctx, float]:
    """Since when the primary has had no synchronous standby (starts now), and for how long."""
    since = c.mem.standby_lost_since
    if since is not None:
        return c, c.obs.now - since
    return replace(c, mem=replace(c.mem, standby_lost_since=c.obs.now)), 0.0


def _leaving(c: Ctx) -> bool:
    p = c.obs.peer
    return (
        c.cfg.policy == "available"
        and p.reachable
        and p.state is S.STOP
        and p.db_role is DbRole.STANDBY
    )


def _let_go(c: Ctx) -> tuple[list[Action], str, Ctx]:
    # The standby's agent is stopping on purpose (an upgrade, a reboot) and says so before its
    # database goes: stop waiting for it now, not after the grace. As when the grace runs
    # out, it is outdated until it has caught up; no RestoreSync while it leaves.
    db, peer = c.obs.db, c.cfg.peer_name
    outdated = db.lsn if c.mem.peer_outdated_from is None else c.mem.peer_outdated_from
    mem = replace(c.mem, peer_outdated_from=outdated, standby_lost_since=c.obs.now)
    return (
        unsync(c, db.lsn) if db.sync_names else [],
        f"standby {peer} stopping on purpose: asynchronous, {peer} outdated from LSN "
        f"{fmt_lsn(outdated)}",
        replace(c, mem=mem),
    )


def _in_sync(c: Ctx) -> tuple[list[Action], str, Ctx]:
    was_outdated = c.mem.peer_outdated_from is not None
    if was_outdated or c.mem.standby_lost_since is not None:
        mem = replace(c.mem, standby_lost_since=None, peer_outdated_from=None)
        c = replace(c, mem=mem)
    acts, note, c = record_peer(c)
    back = f"{c.cfg.peer_name} back in sync" if was_outdated else ""
    return acts, "; ".join(n for n in (back, note) if n), c


def _grace_over(c: Ctx) -> bool:
    return (
        c.cfg.policy == "available"
        and bool(c.obs.db.sync_names)
        and _lost(c)[1] >= c.cfg.standby_loss_grace_s
    )


def _drop(c: Ctx) -> tuple[list[Action], str, Ctx]:
    c, lost_for = _lost(c)
    db, peer = c.obs.db, c.cfg.peer_name
    outdated = db.lsn if c.mem.peer_outdated_from is None else c.mem.peer_outdated_from
    c = replace(c, mem=replace(c.mem, peer_outdated_from=outdated))
    return (
        unsync(c, db.lsn),
        f"standby {peer} lost for {lost_for:.1f}s: asynchronous, {peer} outdated from LSN "
        f"{fmt_lsn(outdated)}",
        c,
    )


def _must_tell(c: Ctx) -> bool:
    """Grace over, and the standby's agent answers and cycles but has not shown it knows it is
    outdated: it could otherwise promote later over writes acknowledged alone (its agent
    stuck in a slow call when the mark was published, and this node dead after). Not in
    quorum mode: etcd's record, changed before the drop, is what keeps it from promoting."""
    p = c.obs.peer
    return (
        not c.cfg.quorum
        and _grace_over(c)
        and p.reachable
        and p.db_role in (DbRole.STANDBY, DbRole.STOPPED)
        and p.tells_outdated  # an agent older than the field never would (rolling upgrade)
        and not p.outdated
        and p.agent_silent_for < c.cfg.peer_agent_timeout_s
    )


def _tell(c: Ctx) -> tuple[list[Action], str, Ctx]:
    c, lost_for = _lost(c)
    db, peer = c.obs.db, c.cfg.peer_name
    outdated = db.lsn if c.mem.peer_outdated_from is None else c.mem.peer_outdated_from
    c = replace(c, mem=replace(c.mem, peer_outdated_from=outdated))
    return (
        [],
        f"standby {peer} lost for {lost_for:.1f}s: {peer} outdated from LSN {fmt_lsn(outdated)}; "
        "writes wait until it has seen the mark",
        c,
    )


def _unsyncing(c: Ctx) -> bool:
    """Quorum mode: the standby is outdated but still named synchronous (the drop waits for
    etcd's record: a promotion without its standby, a grace that ran out)."""
    return c.cfg.quorum and c.mem.peer_outdated_from is not None and bool(c.obs.db.sync_names)


def _unsync(c: Ctx) -> tuple[list[Action], str, Ctx]:
    peer = c.cfg.peer_name
    return unsync(c, c.obs.db.lsn), f"{peer} outdated: {unsync_note(c)}", c


def _streaming_again(c: Ctx) -> bool:
    # Seen streaming by our own WAL sender, not by its word.
    return not c.obs.db.sync_names and c.cfg.peer_name in c.obs.db.streaming_to


def _restore(c: Ctx) -> tuple[list[Action], str, Ctx]:
    # Name it synchronous and give it a fresh grace to confirm.
    c = replace(c, mem=replace(c.mem, standby_lost_since=None))
    return [RestoreSync()], f"{c.cfg.peer_name} streaming again: naming it synchronous", c


def _note(text: Callable[[Ctx], str]) -> Callable[[Ctx], tuple[list[Action], str, Ctx]]:
    def then(c: Ctx) -> tuple[list[Action], str, Ctx]:
        c, _ = _lost(c)
        return [], text(c), c

    return then


POLICY: tuple[PolicyRule, ...] = (
    PolicyRule("standby-leaving", "the standby stops on purpose: drop it from sync at once",
               _leaving, _let_go),
    PolicyRule("in-sync", "a synchronous standby: clear its outdated mark",
               lambda c: c.obs.db.sync_standby is not None, _in_sync),
    PolicyRule("quorum-unsync", "quorum: the standby outdated, still named synchronous: "
               "record in etcd that we acknowledge alone, then drop it from sync",
               _unsyncing, _unsync),
    PolicyRule("grace-over-tell", "available, no synchronous standby for the grace, its agent "
               "answering: mark it outdated, wait until it shows it has seen the mark",
               _must_tell, _tell),
    PolicyRule("grace-over", "available, no synchronous standby for the grace (the standby "
               "silent, stuck, or aware it is outdated): drop it from sync, mark it outdated",
               _grace_over, _drop),
    PolicyRule("streaming-again", "asynchronous and the peer streams: name it synchronous",
               _streaming_again, _restore),
    PolicyRule("strict-wait", "strict: writes wait for the standby",
               lambda c: c.cfg.policy == "strict",
               _note(lambda c: "no synchronous standby: writes wait (strict)")),
    PolicyRule("degraded", "available, the peer outdated: acknowledge alone (DEGRADED)",
               lambda c: c.mem.peer_outdated_from is not None,
               _note(lambda c: f"DEGRADED: no synchronous standby ({c.cfg.peer_name} "
                               "outdated)")),
    PolicyRule("grace-wait", "available, within the grace: writes wait",
               lambda c: True,
               _note(lambda c: "no synchronous standby yet: writes wait up to "
                               f"{c.cfg.standby_loss_grace_s:.0f}s")),
)  # fmt: skip


# --- a full disk -------------------------------------------------------------------------------


def _disk_refusal(c: Ctx) -> str | None:
    """None if a primary on a full disk may hand the role over now, else why not. As a
    planned switchover (the standby in sync, caught up before the VIP moves: nothing is
    lost), onto a standby that has room, and not while paused (it is automatic)."""
    if c.mem.pause.paused:
        return "paused (maintenance mode)"
    why = switchover_refusal(c.obs, c.mem, c.cfg)
    if why is None and not peer_has_room(c):
        return f"{c.cfg.peer_name} has no room either ({fmt_mb(c.obs.peer.disk_free)} free)"
    return why


def _disk_full(c: Ctx) -> str:
    return (
        f"{fmt_mb(c.obs.disk_free)} free for the database, under database.min_free_mb "
        f"({fmt_mb(c.cfg.min_free_bytes)})"
    )


def _hand_over_disk(c: Ctx) -> Then:
    return Then(
        c.quiet,
        f"disk full: {_disk_full(c)}: handing over to {c.cfg.peer_name} "
        f"({fmt_mb(c.obs.peer.disk_free)} free); writes quiesced",
        replace(c.mem, switchover_since=c.obs.now),
    )


def _disk_note(c: Ctx) -> str:
    """A primary on a full disk that cannot hand over says so, and why."""
    if not disk_low(c):
        return ""
    return f" (DISK FULL: {_disk_full(c)}; not handing over: {_disk_refusal(c)})"


def _serve(c: Ctx) -> Then:
    """Primary database, keepalived MASTER, eligible: serve, and apply the standby policy."""
    policy = next(r for r in POLICY if r.when(c))
    acts, note, c = policy.then(c)
    reason = "serving as primary" + (": " + note if note else "") + _paused_note(c) + _disk_note(c)
    return Then([OpenGate(), *acts, *_activate(c)], reason, c.mem, sub=policy.id)


def _serve_shared(c: Ctx) -> Then:
    return Then([OpenGate(), *_activate(c)], "serving as primary" + _paused_note(c), c.mem)


def _paused_note(c: Ctx) -> str:
    """A paused primary says so, and what it serves through (it would otherwise give up)."""
    if not c.mem.pause.paused:
        return ""
    through = []
    if c.obs.gateway_ok is False:
        through.append(f"gateway {c.cfg.gateway} unreachable")
    if c.obs.service.failures >= c.cfg.health_failures:
        through.append("service unhealthy")
    kept = f", serving on though {' and '.join(through)}" if through else ""
    return f" (PAUSED: no automatic failover{kept})"


# --- the rules ----------------------------------------------------------------------------------


PRIMARY, STANDBY = frozenset({DbRole.PRIMARY}), frozenset({DbRole.STANDBY})
RUNNING = PRIMARY | STANDBY
AS_MASTER = frozenset({VrrpState.MASTER})

SPLIT_BRAIN = (
    Rule("split-brain-yield", "both primaries, the peer's data newer: give up the role",
         lambda c: c.both_primary and peer_outranks(c), to(S.FAULT), _yield, db=PRIMARY),
    Rule("split-brain-keep", "both primaries, our data newer (and the leader key, in quorum "
         "mode): keep the role", lambda c: c.both_primary and lease_ok(c), via(S.MASTER),
         _keep, db=PRIMARY),
)  # fmt: skip


def handing_over(c: Ctx) -> bool:
    return c.mem.switchover_since is not None


HAND_OVER_REPLICATED = (
    Rule("handover-abort", "switchover not done within switchover_timeout_s: serve again",
         lambda c: handing_over(c) and _overdue(c), via(S.MASTER), _abort, db=PRIMARY),
    Rule("handover-release", "switchover, the standby caught up and not outdated: release "
         "the VIP", lambda c: handing_over(c) and _caught_up(c) and not c.obs.peer.outdated,
         to(S.SWITCHING), _release, db=PRIMARY),
    Rule("handover-wait-mark", "switchover, the standby caught up: wait until it has seen it "
         "is no longer outdated", lambda c: handing_over(c) and _caught_up(c),
         to(S.SWITCHING), _wait_mark, db=PRIMARY),
    Rule("handover-wait", "switchover: writes quiesced, wait for the standby to catch up",
         handing_over, to(S.SWITCHING), _wait_catch_up, db=PRIMARY),
)  # fmt: skip

HAND_OVER_SHARED = (
    HAND_OVER_REPLICATED[0],
    Rule("handover-release-volume", "switchover, the peer is standby: release the VIP and "
         "the volume", lambda c: handing_over(c) and c.obs.peer.reachable
         and c.obs.peer.db_role is DbRole.STANDBY, to(S.SWITCHING), _release_volume,
         db=PRIMARY),
    HAND_OVER_REPLICATED[3],
)  # fmt: skip


def _vetoed(c: Ctx) -> bool:
    return c.veto is not None


TAKE_ROLE_HEAD = (
    Rule("refuse-vip-peer-serves", "a standby while the peer serves (VRRP partition): hold "
         "the VIP down", lambda c: c.peer_serving, to(S.FAULT), _hold_down, db=STANDBY),
    Rule("paused-standby", "maintenance mode: a standby elected all the same (the gate read "
         "late) refuses the VIP and stays the standby", lambda c: c.veto is Veto.PAUSED,
         via(S.BACKUP), _refuse, db=STANDBY),
    Rule("master-cold-boot", "never saw the peer since start: wait for it",
         lambda c: c.veto is Veto.COLD_BOOT, to(S.SWITCHING), _refuse),
    Rule("master-vetoed", "vetoed (outdated, unhealthy, newer peer...): refuse the VIP",
         _vetoed, to(S.FAULT), _refuse),
)  # fmt: skip

MASTER_REPLICATED = where((
    *SPLIT_BRAIN,
    *HAND_OVER_REPLICATED,
    *TAKE_ROLE_HEAD,
    Rule("await-lease", "quorum: elected before the leader key is ours: wait for it",
         lambda c: not lease_ok(c), to(S.SWITCHING), _await_lease, db=STANDBY),
    Rule("promote-alone", "a standby, available, the old primary gone: promote, mark it "
         "outdated", _alone, to(S.SWITCHING), _promote_alone, db=STANDBY),
    Rule("promote", "a standby: promote", lambda c: True, to(S.SWITCHING), _promote,
         db=STANDBY),
    Rule("disk-full-handover", "the database's disk under database.min_free_mb, the standby "
         "in sync with room, not paused: hand the role over (a planned switchover)",
         lambda c: disk_low(c) and _disk_refusal(c) is None, to(S.SWITCHING),
         _hand_over_disk, db=PRIMARY),
    Rule("serve", "primary, eligible: serve and apply the standby policy", lambda c: True,
         via(S.MASTER), _serve, db=PRIMARY),
), vrrp=AS_MASTER, db=RUNNING)  # fmt: skip

MASTER_SHARED = where((
    *SPLIT_BRAIN,
    *HAND_OVER_SHARED,
    *TAKE_ROLE_HEAD,
    Rule("take-volume", "the volume not ours: take it over", lambda c: True,
         to(S.SWITCHING), _take_volume, db=STANDBY),
    Rule("serve-shared", "the volume ours, eligible: serve", lambda c: True, via(S.MASTER),
         _serve_shared, db=PRIMARY),
), vrrp=AS_MASTER, db=RUNNING)  # fmt: skip
