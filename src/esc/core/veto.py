"""Why a node must not hold the VIP: a code, never a sentence to parse.

``veto()`` is the gate keepalived tracks (a node that must not be primary vetoes the VIP
itself, so keepalived never elects it); rules match on the code, and ``render()`` writes the
sentence the agent logs and shows.
"""

from __future__ import annotations

from enum import StrEnum

from esc.core.facts import Ctx, fmt_lsn, peer_outranks, recorded_here, sync_member, winning_data
from esc.model import DbRole, NodeState


class Veto(StrEnum):
    """Published in history and status as the rule's reason only; the values are stable."""

    AGENT_FAULT = "agent-fault"  # the agent's own fault (Observation.fault)
    DB_NOT_RUNNING = "db-not-running"
    OUTDATED = "outdated"  # the primary dropped us from sync: our data may lack writes
    UNHEALTHY = "unhealthy"  # the service failed its health checks
    COLD_BOOT = "cold-boot"  # never saw the peer since start: it may hold newer data
    HANDING_OVER = "handing-over"  # a planned switchover gives the role away
    HOLDING_DOWN = "holding-down"  # elected while the peer still served (VRRP partition)
    PEER_NEWER_PRIMARY = "peer-newer-primary"  # both primaries, the peer's data wins
    PEER_NEWER_DATA = "peer-newer-data"  # both booting, the peer's data wins
    NOT_SYNC_MEMBER = "not-sync-member"  # quorum: a standby etcd does not record as in sync
    NO_LEASE = "no-lease"  # quorum: this node does not hold etcd's leader key
    PAUSED = "paused"  # maintenance mode: a standby does not take over (escadm ha pause)


# The vetoes of a standby that waits for its data to be good enough: it stays BACKUP.
STANDBY_WAITS = frozenset(
    {
        Veto.OUTDATED,
        Veto.PEER_NEWER_PRIMARY,
        Veto.PEER_NEWER_DATA,
        Veto.NOT_SYNC_MEMBER,
        Veto.NO_LEASE,
        Veto.PAUSED,
    }
)


def paused_standby(c: Ctx) -> bool:
    """Maintenance mode keeps this node from taking the role: it is not the primary, the
    pair is paused, and neither the operator's switchover (the peer hands over to us) nor
    force-primary asks for the role."""
    return (
        c.mem.pause.paused
        and c.obs.db.role is not DbRole.PRIMARY
        and not c.mem.forced
        and not (c.obs.peer.reachable and c.obs.peer.handing_over)
    )


def paused_primary(c: Ctx) -> bool:
    """Maintenance mode keeps this primary serving through its own findings (the gateway
    lost, the service failing its checks): the standby would not take over anyway."""
    return c.mem.pause.paused and c.obs.db.role is DbRole.PRIMARY


def veto(c: Ctx) -> Veto | None:
    """None if this node may hold the VIP now, else the first reason it must not."""
    db, p, mem = c.obs.db, c.obs.peer, c.mem
    if c.obs.fault is not None:
        return Veto.AGENT_FAULT
    if not db.is_running:
        return Veto.DB_NOT_RUNNING
    if mem.self_outdated_from is not None and not mem.forced:
        return Veto.OUTDATED
    if c.obs.service.failures >= c.cfg.health_failures and not paused_primary(c):
        return Veto.UNHEALTHY
    if not mem.peer_seen and not mem.forced and not (c.cfg.quorum and recorded_here(c)):
        # (Quorum mode: etcd's record says this node's data has every acknowledged write.)
        return Veto.COLD_BOOT
    if paused_standby(c):
        return Veto.PAUSED
    if mem.switchover_since is not None:
        return Veto.HANDING_OVER
    if c.obs.now < mem.hold_down_until:
        return Veto.HOLDING_DOWN
    if c.both_primary and peer_outranks(c):
        return Veto.PEER_NEWER_PRIMARY
    # Both nodes booting (double fault): the newer data wins. Only while the peer is itself
    # SWITCHING: a peer in FAULT has given up the role, and a standby that was in sync holds
    # every acknowledged write (an outdated one is caught above).
    if (
        p.reachable
        and p.state is NodeState.SWITCHING
        and not p.handing_over
        and p.db_role in (DbRole.PRIMARY, DbRole.STANDBY)
        and (p.db_role is DbRole.PRIMARY) >= (db.role is DbRole.PRIMARY)
        and peer_outranks(c)
    ):
        return Veto.PEER_NEWER_DATA
    if c.cfg.quorum:
        return quorum_veto(c)
    return None


def quorum_veto(c: Ctx) -> Veto | None:
    """Quorum mode: a standby that etcd does not record as the synchronous member lacks writes
    the primary may have acknowledged alone; a node without the leader key must not serve."""
    q = c.obs.quorum
    if c.obs.db.role is DbRole.STANDBY and not sync_member(c) and not c.mem.forced:
        return Veto.NOT_SYNC_MEMBER
    if q is None or not q.holder:
        if c.obs.db.role is DbRole.STANDBY and campaigning(c):
            return None  # keepalived may elect it; it promotes only with the key
        return Veto.NO_LEASE
    return None


def campaigning(c: Ctx) -> bool:
    """A standby about to take the leader key (the peer does not serve, the key is free or
    soon stale): electable, so that keepalived's election is over when the key is taken."""
    q = c.obs.quorum
    return (
        q is not None and q.reachable and not c.peer_serving and q.takeover_in <= c.cfg.vrrp_lead_s
    )


def render(v: Veto, c: Ctx) -> str:
    peer, p = c.cfg.peer_name, c.obs.peer
    match v:
        case Veto.AGENT_FAULT:
            return f"agent fault: {c.obs.fault}"
        case Veto.DB_NOT_RUNNING:
            return f"database {c.obs.db.role.value}"
        case Veto.OUTDATED:
            lsn = fmt_lsn(c.mem.self_outdated_from or 0)
            return f"outdated: the primary dropped us from sync at LSN {lsn}"
        case Veto.UNHEALTHY:
            return "service unhealthy"
        case Veto.COLD_BOOT:
            return f"cold boot: waiting for peer {peer}"
        case Veto.HANDING_OVER:
            return f"handing over to {peer}"
        case Veto.HOLDING_DOWN:
            return f"holding down: peer {peer} still serving"
        case Veto.PEER_NEWER_PRIMARY:
            return f"peer {peer} is primary with {winning_data(c)}; this database must follow it"
        case Veto.PEER_NEWER_DATA:
            return f"peer {peer} has newer data (timeline {p.timeline}, LSN {fmt_lsn(p.lsn)})"
        case Veto.NOT_SYNC_MEMBER:
            rec = c.obs.quorum.sync if c.obs.quorum else None
            named = f"records {rec.sync or 'no standby'} in sync" if rec else "has no record"
            return f"not the synchronous member: etcd {named}"
        case Veto.NO_LEASE:
            return no_lease_reason(c)
        case Veto.PAUSED:
            return f"paused (maintenance mode, by {c.mem.pause.by or '?'}): no takeover"


def no_lease_reason(c: Ctx) -> str:
    q = c.obs.quorum
    if q is None or not q.reachable:
        return "no leader lease: etcd unreachable"  # the error is in status (quorum.error)
    rec = q.sync
    if c.obs.db.role is DbRole.PRIMARY and rec is not None and not rec.names(c.cfg.node_name):
        return f"no leader lease: etcd records {rec.primary} as the primary, not this database"
    if q.leader and q.leader != c.cfg.node_name:
        return f"no leader lease: {q.leader} holds the leader key"
    return "no leader lease: the leader key is free"
