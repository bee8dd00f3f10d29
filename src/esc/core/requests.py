"""Operator requests the core admits or refuses: a planned switchover, forcing this node
primary. (Reloading the configuration is the agent's: it reads files.)"""

from __future__ import annotations

from dataclasses import replace

from esc.core.facts import DecideConfig
from esc.model import Memory, NodeState, Observation, SyncRecord


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
