"""What an agent publishes after each cycle, from what the cycle observed and decided: its
view for the peer (``GET /peer``, esc.wire) and its status for escadm and the portal
(``GET /status``, esc.status_view). Pure: no I/O, the loop passes in what it read."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from esc.agent.quorum_setup import cluster
from esc.config.schema import EscConfig
from esc.core.decide import alone_transactions
from esc.core.facts import DecideConfig
from esc.drivers.base import BgpStatus
from esc.model import DbRole, Decision, NodeState, Observation
from esc.status_view import StatusView, Transition
from esc.wire import peer_view


def announced(bgp: BgpStatus | None) -> bool:
    """The anycast route is announced and ExaBGP acknowledged it."""
    return bgp is not None and bgp.running and bgp.announced and bgp.acked


def view_of(
    dcfg: DecideConfig, obs: Observation, d: Decision, announced: bool, cycle: int
) -> dict[str, Any]:
    mem = d.memory
    return peer_view(
        node=dcfg.node_name,
        state=d.next_state,
        db=obs.db,
        serving=obs.service.active and d.next_state is NodeState.MASTER,
        vip_held=obs.vip_held,
        announced=announced,
        outdated_lsn=mem.peer_outdated_from,
        outdated=mem.self_outdated_from is not None and not mem.forced,
        handing_over=mem.switchover_since is not None,
        reason=d.reason,
        cycle=cycle,
        served_timeline=mem.served_timeline,
        pause=mem.pause,
        disk_free=obs.disk_free,
    )


def status_of(
    cfg: EscConfig,
    dcfg: DecideConfig,
    since: float,
    obs: Observation,
    d: Decision,
    bgp: BgpStatus | None,
    last: Mapping[str, Any] | None,
) -> StatusView:
    """``last``: the newest entry of the agent's history (agent/history.py), if any."""
    mem = d.memory
    members: tuple[str, ...] = ()
    if dcfg.quorum:
        members = tuple(f"{m.name}={m.client_url}" for m in cluster(cfg))
    return StatusView(
        node=dcfg.node_name,
        peer_name=dcfg.peer_name,
        state=d.next_state,
        since=since,
        reason=d.reason,
        rule=d.rule_id,
        vrrp=str(getattr(obs.vrrp, "value", obs.vrrp)),
        vip=str(cfg.ha.kad_vip) if cfg.ha else None,
        ha_mode=cfg.ha.ha_mode if cfg.ha else None,
        vip_held=obs.vip_held,
        anycast=str(cfg.bgp.anycast_ip) if cfg.bgp else None,
        announced=announced(bgp),
        bgp=bgp,
        db=obs.db,
        service=obs.service,
        peer=obs.peer,
        gateway_ok=obs.gateway_ok,
        policy=dcfg.policy,
        forced=mem.forced,
        peer_outdated_from=mem.peer_outdated_from,
        self_outdated_from=mem.self_outdated_from,
        degraded_since=mem.alone_since if mem.peer_outdated_from is not None else None,
        # at most this many write transactions acknowledged alone (core.decide)
        alone_transactions=alone_transactions(obs.db, mem),
        # WAL this node wrote since the peer became outdated: what only this node holds
        alone_wal_bytes=(
            max(0, obs.db.lsn - mem.peer_outdated_from)
            if mem.peer_outdated_from is not None and obs.db.role is DbRole.PRIMARY
            else None
        ),
        switchover=mem.switchover_since is not None,
        paused=mem.pause.paused,
        paused_by=mem.pause.by,
        paused_at=mem.pause.at,
        switchover_at=mem.switchover_at,
        switchover_at_by=mem.switchover_at_by,
        switchover_note=mem.switchover_note,
        disk_free=obs.disk_free,
        min_free=dcfg.min_free_bytes,
        quorum=obs.quorum,
        quorum_members=members,
        last_transition=(
            Transition(last["time"], last["from"], last["to"], last["reason"])
            if last is not None
            else None
        ),
    )
