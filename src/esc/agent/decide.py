"""The agent's decision: one pure function from an observation to a decision.

No I/O, no clock, no sleeping in this module. ``decide(obs, prev, cfg)`` returns the next state,
the actions to execute in order (each idempotent) and one sentence saying why; the agent logs the
sentence and tests assert on it. Anything that must outlive a cycle travels in ``Memory``.

The rules, in order:
1. keepalived dead -> FAULT: drop the VIP it left behind, deactivate, restart it.
2. gateway unreachable -> FAULT: an isolated node never stays primary.
3. no database yet -> first boot: the first node of ha_node_list creates it, the other clones.
4. database stopped -> start it, or follow the serving peer.
5. keepalived MASTER -> become primary (promote, then activate) if eligible; resolve a
   split brain by data; hand over on a switchover.
6. keepalived BACKUP -> be a standby (deactivate, follow the primary).
7. keepalived FAULT/INIT/STOP -> serve nothing; follow a serving peer; report why.
"Eligible" (``why_not_primary``) is the gate keepalived tracks: a node that must not be primary
vetoes the VIP itself, so keepalived never elects it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from esc.agent.states import check_transition, route
from esc.model import (
    Action,
    ActivateService,
    CloseGate,
    DbRole,
    DeactivateService,
    Decision,
    DropSync,
    Follow,
    InitPrimary,
    Memory,
    NodeState,
    Observation,
    OpenGate,
    Promote,
    RemoveVip,
    RestartVrrp,
    RestoreSync,
    StartDb,
    VrrpState,
)

S = NodeState
GATE_SETTLE_S = 1.0
HANDOVER_LIMIT_S = 60.0  # a switchover that has not completed by then is abandoned
RANK_STEP = 2  # data_rank: more than the one point between the two configured priorities


@dataclass(frozen=True)
class DecideConfig:
    node_name: str
    peer_name: str
    first_node: bool  # owns the first address of ha_node_list: creates the database at first boot
    policy: Literal["strict", "available"] = "available"
    standby_loss_grace_s: float = 5.0
    health_failures: int = 3
    hold_down_s: float = 30.0
    switchover_timeout_s: float = 10.0
    gateway: str | None = None
    # ha_mode cinder: one database on a shared volume; "standby" means "not attached here",
    # "follow" means "release the volume", and there is no replication policy to apply.
    shared_storage: bool = False


def fmt_lsn(lsn: int) -> str:
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def _peer_desc(obs: Observation, timed: bool = True) -> str:
    """'peer silent 1.1s' / 'peer MASTER'. Untimed for steady-state sentences, which are logged
    only when they change."""
    p = obs.peer
    if not p.reachable:
        return f"peer silent {p.silent_for:.1f}s" if timed else "peer silent"
    return f"peer {p.state.value if p.state else '?'}"


def _learn(obs: Observation, prev: Memory, cfg: DecideConfig) -> Memory:
    """Fold this observation into memory (before deciding)."""
    mem = prev
    p = obs.peer
    if not _peer_serving(obs) and mem.hold_down_until:
        mem = replace(mem, hold_down_until=0.0)  # the peer stopped serving: hold-down over
    if p.reachable:
        mem = replace(mem, peer_seen=True, forced=False)
        if p.timeline:
            mem = replace(mem, peer_timeline=p.timeline)
        # Only a node that is not primary takes the primary's word that it is outdated (a
        # stopped one too: its database may be a standby that died before the mark): in a
        # split brain both are primaries, and the loser is decided by data, not by marks.
        if p.db_role is DbRole.PRIMARY and obs.db.role is not DbRole.PRIMARY:
            mem = replace(mem, self_outdated_from=p.outdated_lsn)
        # A mark taken while stopped may have been about a history that, once started, is the
        # newer primary's: a primary whose peer follows it, or whose data outranks the peer
        # primary's, is not outdated by anything that peer said.
        if obs.db.role is DbRole.PRIMARY and mem.self_outdated_from is not None:
            follows_us = p.db_role is DbRole.STANDBY
            if follows_us or (_both_primary(obs) and not _peer_outranks(obs, cfg)):
                mem = replace(mem, self_outdated_from=None)
    if (
        mem.switchover_since is not None
        and obs.db.role is DbRole.STANDBY
        and obs.vrrp is not VrrpState.MASTER
    ):
        mem = replace(mem, switchover_since=None)  # handed over and following: done
    elif mem.switchover_since is not None and obs.now - mem.switchover_since > HANDOVER_LIMIT_S:
        # The peer never took over (it died mid-switchover): stop vetoing ourselves.
        mem = replace(mem, switchover_since=None)
    return mem


def _peer_outranks(obs: Observation, cfg: DecideConfig) -> bool:
    """Whose data wins: newer timeline, then further LSN, then name (so exactly one side wins)."""
    p = obs.peer
    return (p.timeline, p.lsn, cfg.peer_name) > (obs.db.timeline, obs.db.lsn, cfg.node_name)


def _both_primary(obs: Observation) -> bool:
    """Both databases are primaries: a failover the old primary has not learned of yet, or a
    split brain. Exactly one side outranks the other (``_peer_outranks``)."""
    return (
        obs.db.role is DbRole.PRIMARY and obs.peer.reachable and obs.peer.db_role is DbRole.PRIMARY
    )


def _peer_serving(obs: Observation) -> bool:
    p = obs.peer
    return p.reachable and p.state is S.MASTER and p.serving


def why_not_primary(obs: Observation, mem: Memory, cfg: DecideConfig) -> str | None:
    """None if this node may hold the VIP now, else the reason it must not."""
    db = obs.db
    p = obs.peer
    if not db.is_running:
        return f"database {db.role.value}"
    if mem.self_outdated_from is not None and not mem.forced:
        return (
            f"outdated: the primary dropped us from sync at LSN {fmt_lsn(mem.self_outdated_from)}"
        )
    if obs.service.failures >= cfg.health_failures:
        return "service unhealthy"
    if not mem.peer_seen and not mem.forced:
        return f"cold boot: waiting for peer {cfg.peer_name}"
    if mem.switchover_since is not None:
        return f"handing over to {cfg.peer_name}"
    if obs.now < mem.hold_down_until:
        return f"holding down: peer {cfg.peer_name} still serving"
    if _both_primary(obs) and _peer_outranks(obs, cfg):
        return f"peer {cfg.peer_name} is primary with newer data; this database must follow it"
    # Both nodes booting (double fault): the newer data wins. Only while the peer is itself
    # SWITCHING: a peer in FAULT has given up the role, and a standby that was in sync holds
    # every acknowledged write (an outdated one is caught above).
    if (
        p.reachable
        and p.state is S.SWITCHING
        and not p.handing_over
        and p.db_role in (DbRole.PRIMARY, DbRole.STANDBY)
        and (p.db_role is DbRole.PRIMARY) >= (db.role is DbRole.PRIMARY)
        and _peer_outranks(obs, cfg)
    ):
        return f"peer {cfg.peer_name} has newer data (timeline {p.timeline}, LSN {fmt_lsn(p.lsn)})"
    return None


def decide(obs: Observation, prev: Memory, cfg: DecideConfig) -> Decision:
    """One cycle's decision. The state returned is always a legal edge from ``prev.state``."""
    mem = _learn(obs, prev, cfg)
    wanted, actions, reason, mem = _decide(obs, mem, cfg)
    if any(isinstance(a, CloseGate) for a in actions):
        mem = replace(mem, gate_opened_at=None)
    elif not obs.gate_open and any(isinstance(a, OpenGate) for a in actions):
        mem = replace(mem, gate_opened_at=obs.now)
    nxt = route(prev.state, wanted)
    check_transition(prev.state, nxt, reason)
    return Decision(nxt, tuple(actions), reason, replace(mem, state=nxt), data_rank(obs, mem))


def data_rank(obs: Observation, mem: Memory) -> int:
    """What this node's data adds to its VRRP priority: +RANK_STEP on a newer timeline than the
    peer last reported, -RANK_STEP on an older one, else 0.

    A standby promoted while the primary was cut off is on a newer timeline: it outranks the old
    primary even though the old one has the higher configured priority (101 against 100, one
    step apart), so when the partition heals keepalived keeps the VIP on the new primary and the
    old one goes BACKUP at the first advert it hears, instead of winning the election back and
    acknowledging writes on a history that is about to be rewound (issue 14). The step is 2 so
    that it always beats the one point between the configured priorities; only the sign of
    the comparison counts, so timelines can grow without bound."""
    if obs.db.role not in (DbRole.PRIMARY, DbRole.STANDBY) or not obs.db.timeline:
        return 0
    if not mem.peer_timeline or obs.db.timeline == mem.peer_timeline:
        return 0
    return RANK_STEP if obs.db.timeline > mem.peer_timeline else -RANK_STEP


_Out = tuple[NodeState, list[Action], str, Memory]


def _quiet(obs: Observation) -> list[Action]:
    return [DeactivateService()] if obs.service.active else []


def _decide(obs: Observation, mem: Memory, cfg: DecideConfig) -> _Out:
    if obs.vrrp is VrrpState.DEAD:
        acts: list[Action] = [CloseGate()]
        if obs.vip_held:
            acts.append(RemoveVip())
        acts += [*_quiet(obs), RestartVrrp()]
        return S.FAULT, acts, "keepalived not running: VIP removed, service off, restarting it", mem
    if obs.gateway_ok is False:
        return (
            S.FAULT,
            [CloseGate(), *_quiet(obs)],
            f"gateway {cfg.gateway} unreachable: giving up the VIP",
            mem,
        )
    if obs.db.role is DbRole.ABSENT:
        return _first_boot(obs, mem, cfg)
    if obs.db.role is DbRole.STOPPED:
        return _db_stopped(obs, mem, cfg)
    why_not = why_not_primary(obs, mem, cfg)
    gate: Action = OpenGate() if why_not is None else CloseGate()
    if obs.vrrp is VrrpState.MASTER:
        return _as_master(obs, mem, cfg, why_not)
    if obs.vrrp is VrrpState.BACKUP:
        return _as_backup(obs, mem, cfg, gate)
    return _not_electable(obs, mem, cfg, gate, why_not)


def _first_boot(obs: Observation, mem: Memory, cfg: DecideConfig) -> _Out:
    p = obs.peer
    acts: list[Action] = [CloseGate(), *_quiet(obs)]
    if p.reachable and p.db_role is DbRole.PRIMARY:
        return S.SWITCHING, [*acts, Follow(cfg.peer_name)], f"cloning from {cfg.peer_name}", mem
    if mem.forced or (p.reachable and p.db_role is DbRole.ABSENT and cfg.first_node):
        why = "forced by operator" if mem.forced else "first boot of the pair"
        return S.SWITCHING, [*acts, InitPrimary()], f"creating the database: {why}", mem
    if not p.reachable or p.db_role is None:
        return S.SWITCHING, acts, f"no database yet: waiting for peer {cfg.peer_name}", mem
    return S.SWITCHING, acts, f"no database yet: waiting for {cfg.peer_name} to create it", mem


def _db_stopped(obs: Observation, mem: Memory, cfg: DecideConfig) -> _Out:
    acts: list[Action] = [CloseGate(), *_quiet(obs)]
    wanted = S.FAULT if mem.state in (S.MASTER, S.BACKUP, S.FAULT) else S.SWITCHING
    if _peer_serving(obs):
        acts.append(Follow(cfg.peer_name))
        return wanted, acts, f"database stopped: following {cfg.peer_name}, which serves", mem
    return wanted, [*acts, StartDb()], "database stopped: starting it", mem


def _as_master(obs: Observation, mem: Memory, cfg: DecideConfig, why_not: str | None) -> _Out:
    db = obs.db
    peer = obs.peer
    if _both_primary(obs):
        # Both primaries (a healed partition): the data decides, not VRRP priority.
        if _peer_outranks(obs, cfg):
            return (
                S.FAULT,
                [CloseGate(), *_quiet(obs)],
                f"split brain: {cfg.peer_name} is also primary with newer data (timeline "
                f"{peer.timeline}, LSN {fmt_lsn(peer.lsn)}); yielding, our diverged writes "
                "will be preserved",
                mem,
            )
        return (
            S.MASTER,
            [OpenGate(), *([] if obs.service.active else [ActivateService()])],
            f"split brain: {cfg.peer_name} is also primary; keeping the role (newer data: "
            f"timeline {db.timeline}, LSN {fmt_lsn(db.lsn)})",
            mem,
        )
    if db.role is DbRole.PRIMARY and mem.switchover_since is not None:
        return _hand_over(obs, mem, cfg)
    if db.role is DbRole.STANDBY and _peer_serving(obs):
        mem = replace(mem, hold_down_until=obs.now + cfg.hold_down_s)
        return (
            S.FAULT,
            [CloseGate()],
            f"keepalived elected us but {cfg.peer_name} still serves (VRRP partition?): "
            f"refusing the VIP while it serves (retry in {cfg.hold_down_s:.0f}s)",
            mem,
        )
    if why_not is not None:
        wanted = S.SWITCHING if why_not.startswith("cold boot") else S.FAULT
        return wanted, [CloseGate(), *_quiet(obs)], f"not taking the VIP: {why_not}", mem
    if db.role is DbRole.STANDBY:
        lag = max(0, db.receive_lsn - db.lsn)
        acts: list[Action] = [OpenGate(), Promote()]
        reason = f"promoting self: keepalived MASTER, {_peer_desc(obs)}, replay lag {lag} B"
        if cfg.shared_storage:
            reason = f"taking over the shared volume: keepalived MASTER, {_peer_desc(obs)}"
        elif cfg.policy == "available" and not (peer.reachable and peer.db_role is DbRole.STANDBY):
            # The old primary is gone: waiting for it would block every write after failover.
            acts.append(DropSync(db.receive_lsn))
            mem = replace(mem, peer_outdated_from=db.receive_lsn, standby_lost_since=None)
            reason += f"; {cfg.peer_name} outdated from LSN {fmt_lsn(db.receive_lsn)}"
        return S.SWITCHING, acts, reason, mem
    return _serve(obs, mem, cfg)


def _serve(obs: Observation, mem: Memory, cfg: DecideConfig) -> _Out:
    """Primary database, keepalived MASTER, eligible: serve, and apply the standby policy."""
    db = obs.db
    acts: list[Action] = [OpenGate()]
    notes: list[str] = []
    peer = obs.peer
    leaving = peer.reachable and peer.state is S.STOP and peer.db_role is DbRole.STANDBY
    if cfg.shared_storage:
        pass  # one copy on the shared volume: no standby to wait for
    elif leaving and cfg.policy == "available":
        # The standby's agent is stopping on purpose (an upgrade, a reboot) and says so before
        # its database goes: stop waiting for it now, not after the grace. As when the grace
        # runs out, it is outdated until it has caught up; no RestoreSync while it leaves.
        if db.sync_names:
            acts.append(DropSync(db.lsn))
        outdated = db.lsn if mem.peer_outdated_from is None else mem.peer_outdated_from
        mem = replace(mem, peer_outdated_from=outdated, standby_lost_since=obs.now)
        notes.append(
            f"standby {cfg.peer_name} stopping on purpose: asynchronous, "
            f"{cfg.peer_name} outdated from LSN {fmt_lsn(outdated)}"
        )
    elif db.sync_standby is not None:
        mem = replace(mem, standby_lost_since=None)
        if mem.peer_outdated_from is not None:
            mem = replace(mem, peer_outdated_from=None)
            notes.append(f"{cfg.peer_name} back in sync")
    else:
        since = mem.standby_lost_since if mem.standby_lost_since is not None else obs.now
        mem = replace(mem, standby_lost_since=since)
        lost_for = obs.now - since
        if cfg.policy == "available" and db.sync_names and lost_for >= cfg.standby_loss_grace_s:
            acts.append(DropSync(db.lsn))
            if mem.peer_outdated_from is None:
                mem = replace(mem, peer_outdated_from=db.lsn)
            notes.append(
                f"standby {cfg.peer_name} lost for {lost_for:.1f}s: asynchronous, "
                f"{cfg.peer_name} outdated from LSN {fmt_lsn(mem.peer_outdated_from or db.lsn)}"
            )
        elif not db.sync_names and cfg.peer_name in db.streaming_to:
            # Seen streaming by our own WAL sender, not by its word: name it synchronous and
            # give it a fresh grace to confirm.
            acts.append(RestoreSync())
            mem = replace(mem, standby_lost_since=None)
            notes.append(f"{cfg.peer_name} streaming again: naming it synchronous")
        elif cfg.policy == "strict":
            notes.append("no synchronous standby: writes wait (strict)")
        elif mem.peer_outdated_from is not None:
            notes.append(f"DEGRADED: no synchronous standby ({cfg.peer_name} outdated)")
        else:
            notes.append(
                f"no synchronous standby yet: writes wait up to {cfg.standby_loss_grace_s:.0f}s"
            )
    if not obs.service.active:
        acts.append(ActivateService())
    reason = "serving as primary" + (": " + "; ".join(notes) if notes else "")
    return S.MASTER, acts, reason, mem


def _hand_over(obs: Observation, mem: Memory, cfg: DecideConfig) -> _Out:
    db = obs.db
    peer = obs.peer
    since = mem.switchover_since or 0.0
    if obs.now - since > cfg.switchover_timeout_s:
        mem = replace(mem, switchover_since=None)
        return (
            S.MASTER,
            [OpenGate(), ActivateService()],
            f"switchover aborted: {cfg.peer_name} did not catch up in "
            f"{cfg.switchover_timeout_s:.0f}s; serving again",
            mem,
        )
    acts = _quiet(obs)
    if cfg.shared_storage and peer.reachable and peer.db_role is DbRole.STANDBY:
        return (
            S.SWITCHING,
            [*acts, CloseGate()],
            f"switchover: writes quiesced; releasing the VIP and the volume to {cfg.peer_name}",
            mem,
        )
    if peer.reachable and peer.streaming and peer.lsn >= db.lsn and not peer.outdated:
        return (
            S.SWITCHING,
            [*acts, CloseGate()],
            f"switchover: {cfg.peer_name} caught up at LSN {fmt_lsn(peer.lsn)}; releasing the VIP",
            mem,
        )
    if peer.reachable and peer.streaming and peer.lsn >= db.lsn:
        return (
            S.SWITCHING,
            acts,
            f"switchover: {cfg.peer_name} caught up; waiting for it to see it is no longer "
            "outdated (it would veto itself when elected)",
            mem,
        )
    return (
        S.SWITCHING,
        acts,
        f"switchover: writes quiesced, waiting for {cfg.peer_name} to reach LSN "
        f"{fmt_lsn(db.lsn)} (at {fmt_lsn(peer.lsn)})",
        mem,
    )


def _as_backup(obs: Observation, mem: Memory, cfg: DecideConfig, gate: Action) -> _Out:
    acts: list[Action] = [gate, *_quiet(obs)]
    if cfg.shared_storage and obs.db.role is DbRole.PRIMARY:
        acts.append(Follow(cfg.peer_name))
        return S.SWITCHING, acts, "keepalived BACKUP: releasing the shared volume", mem
    if cfg.shared_storage:
        return S.BACKUP, acts, f"standby: the shared volume is {cfg.peer_name}'s to use", mem
    if obs.db.role is DbRole.PRIMARY:
        if _both_primary(obs) and _peer_outranks(obs, cfg):
            acts.append(Follow(cfg.peer_name))
            return S.SWITCHING, acts, f"demoting: following {cfg.peer_name} (newer data)", mem
        if _both_primary(obs):
            return (
                S.SWITCHING,
                acts,
                f"split brain: keeping our newer data; waiting for {cfg.peer_name} to yield",
                mem,
            )
        return S.SWITCHING, acts, "keepalived BACKUP, database primary: waiting for a primary", mem
    db = obs.db
    if db.streaming:
        lag = max(0, db.receive_lsn - db.lsn)
        return S.BACKUP, acts, f"standby: streaming from {cfg.peer_name}, replay lag {lag} B", mem
    return S.BACKUP, acts, f"standby: not streaming ({_peer_desc(obs, timed=False)})", mem


def _not_electable(
    obs: Observation, mem: Memory, cfg: DecideConfig, gate: Action, why_not: str | None
) -> _Out:
    acts: list[Action] = [gate, *_quiet(obs)]
    if cfg.shared_storage and obs.db.role is DbRole.PRIMARY:
        acts.append(Follow(cfg.peer_name))
        return S.SWITCHING, acts, f"keepalived {obs.vrrp.value}: releasing the shared volume", mem
    if _both_primary(obs) and _peer_outranks(obs, cfg):
        acts.append(Follow(cfg.peer_name))
        return S.SWITCHING, acts, f"{cfg.peer_name} is primary with newer data: following it", mem
    vrrp = obs.vrrp.value
    if why_not is None:
        # keepalived reads the gate file a moment after we write it: FAULT right after opening
        # is not a fault yet.
        settling = mem.gate_opened_at is not None and obs.now - mem.gate_opened_at < GATE_SETTLE_S
        if obs.vrrp is VrrpState.FAULT and obs.gate_open and not settling:
            return S.FAULT, acts, "keepalived FAULT with the gate open (interface down?)", mem
        if obs.db.role is DbRole.STANDBY and mem.state is S.BACKUP:
            return S.BACKUP, acts, "standby: gate open, waiting for keepalived", mem
        if obs.vrrp is VrrpState.FAULT:
            return S.SWITCHING, acts, "opening the gate: may hold the VIP", mem
        return S.SWITCHING, acts, f"keepalived {vrrp}: waiting for the election", mem
    if why_not.startswith(("cold boot", "handing over")):
        return S.SWITCHING, acts, why_not, mem
    if (
        obs.db.role is DbRole.STANDBY
        and mem.state in (S.BACKUP, S.SWITCHING)
        and ("newer data" in why_not or "outdated" in why_not)
    ):
        return S.BACKUP, acts, f"standby, not electable: {why_not}", mem
    return S.FAULT, acts, f"keepalived {vrrp}: {why_not}", mem
