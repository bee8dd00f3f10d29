"""Operator requests the core admits or refuses: a planned switchover (now or scheduled),
forcing this node primary, pausing the pair (maintenance mode). (Reloading the configuration
is the agent's: it reads files.)"""

from __future__ import annotations

import math
from dataclasses import replace

from esc.core.facts import DecideConfig
from esc.model import Memory, NodeState, Observation, Pause, SyncRecord


def switchover_refusal(obs: Observation, mem: Memory, cfg: DecideConfig) -> str | None:
    """None if a planned switchover can start now, else why not (shown to the operator).
    With a shared volume there is no replication to check: the peer takes the volume over."""
    p, peer = obs.peer, cfg.peer_name
    if mem.state is not NodeState.MASTER:
        return f"this node is {mem.state.value}, not MASTER: run it on the primary"
    if mem.switchover_since is not None:
        return "already in progress"
    if not p.reachable:
        return f"peer {peer} is not reachable"
    if p.state is not NodeState.BACKUP:
        return f"peer {peer} is {p.state.value if p.state else '?'}, not BACKUP"
    if cfg.mode == "shared":
        return None
    if not p.streaming:
        return f"peer {peer} is not streaming from this node"
    if obs.db.sync_standby is None:
        return f"peer {peer} is not a synchronous standby (outdated or catching up)"
    if mem.peer_outdated_from is not None or p.outdated:
        # In sync again, but the mark goes only when this node next serves (serve/in-sync):
        # handed over now, the peer would veto itself as outdated when elected.
        return f"peer {peer} is still marked outdated: retry in a moment"
    q = obs.quorum
    if cfg.quorum and (q is None or q.sync != SyncRecord(cfg.node_name, peer)):
        # It could not take the leader key: the switchover would only time out.
        return f"etcd does not record {peer} as the synchronous standby yet: retry in a moment"
    return None


def request_switchover(
    obs: Observation, mem: Memory, cfg: DecideConfig
) -> tuple[Memory, str | None]:
    """(memory, refusal): the switchover starts now, or the reason it does not."""
    why = switchover_refusal(obs, mem, cfg)
    if why is not None:
        return mem, why
    return replace(mem, switchover_since=obs.now), None


def force_primary(mem: Memory) -> Memory:
    """The operator takes the risk: this node may become primary without its peer (cold boot
    and outdated vetoes lifted until the peer is seen again)."""
    return replace(mem, forced=True)


# --- maintenance mode -------------------------------------------------------------------------


def set_pause(obs: Observation, mem: Memory, paused: bool, who: str) -> tuple[Memory, str]:
    """(memory, message): the pair paused (or resumed) by ``who``. The record takes a ``seq``
    above this node's and the peer's last, so that the peer adopts it (core/learn.py) and an
    older record of either node never overrides it. Already so: nothing changes."""
    if mem.pause.paused == paused:
        p = mem.pause
        since = f" (by {p.by or '?'}, {_when(p.at)})" if p.seq else ""
        return mem, f"already {'paused' if paused else 'not paused'}{since}"
    peer_seq = obs.peer.pause.seq if obs.peer.pause is not None else 0
    seq = max(mem.pause.seq, peer_seq) + 1
    mem = replace(mem, pause=Pause(paused, seq, who, obs.wall))
    if paused:
        return mem, (
            f"paused by {who}: no automatic failover or demotion on either node until "
            "`escadm ha resume` (switchover and force-primary still work)"
        )
    return mem, f"resumed by {who}: automatic failover is back on"


def _when(at: float | None) -> str:
    return "at an unknown time" if at is None else f"at {at:.0f} (epoch)"


# --- a scheduled switchover -------------------------------------------------------------------

# A scheduled switchover found due this long after its time is not run: the agent was not
# running then (stopped, the host down), and an operator planned it for that moment, not for
# whenever the agent is back.
LATE_S = 60.0


def schedule_switchover(
    obs: Observation, mem: Memory, at: float, who: str
) -> tuple[Memory, str | None]:
    """(memory, refusal): one switchover scheduled at ``at`` (epoch seconds). Refused in the
    past, when one is scheduled already (cancel it first: a second --at never silently
    replaces the first), and on a node that is not the primary (the role it would hand over
    is not here). The rest of the admission (the peer in sync...) is checked at that time."""
    if not math.isfinite(at) or at <= obs.wall:
        return mem, f"at: {at:.0f} is not in the future (now {obs.wall:.0f}, epoch seconds)"
    if mem.switchover_at is not None:
        return mem, (
            f"a switchover is already scheduled at {mem.switchover_at:.0f} (epoch) by "
            f"{mem.switchover_at_by or '?'}: cancel it first (escadm ha switchover --cancel)"
        )
    if mem.state is not NodeState.MASTER:
        return mem, f"this node is {mem.state.value}, not MASTER: schedule it on the primary"
    return replace(mem, switchover_at=at, switchover_at_by=who), None


def cancel_switchover(mem: Memory, who: str) -> tuple[Memory, str | None]:
    """(memory, refusal): the scheduled switchover cancelled, or why not (none scheduled)."""
    if mem.switchover_at is None:
        return mem, "no switchover is scheduled"
    note = f"scheduled switchover at {mem.switchover_at:.0f} (epoch) cancelled by {who}"
    return replace(mem, switchover_at=None, switchover_at_by="", switchover_note=note), None


def due_switchover(obs: Observation, mem: Memory, cfg: DecideConfig) -> tuple[Memory, str | None]:
    """(memory, note): at its time, the scheduled switchover goes through the admission of a
    manual one (``request_switchover``) and is cleared whether it starts or not; the note
    says which, and why not (for the history and the status). None: nothing due."""
    at = mem.switchover_at
    if at is None or obs.wall < at:
        return mem, None
    who = mem.switchover_at_by or "?"
    mem = replace(mem, switchover_at=None, switchover_at_by="")
    late = obs.wall - at
    if late > LATE_S:
        note = (
            f"scheduled switchover (by {who}) not run: found {late:.0f}s after its time "
            "(the agent was not running then)"
        )
    else:
        mem, why = request_switchover(obs, mem, cfg)
        if why is None:
            note = f"scheduled switchover (by {who}) started: handing over to {cfg.peer_name}"
        else:
            note = f"scheduled switchover (by {who}) not run: {why}"
    return replace(mem, switchover_note=note), note
