"""Agent statuses for the tests of their readers (escadm, the portal): typed, as the agent
builds them (esc.status_view), and as JSON, as its local socket answers them."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from esc.model import DbRole, DbStatus, NodeState, PeerView, ServiceView
from esc.status_view import StatusView, Transition, status_json

T0 = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC


def peer_of(primary: bool, at: int, **changes: Any) -> PeerView:
    """The peer, reachable, as this node sees it (``primary``: this node is the primary) with
    this node at LSN ``at``."""
    lsn = at
    view = PeerView(
        reachable=True,
        silent_for=0.4,
        state=NodeState.BACKUP if primary else NodeState.MASTER,
        db_role=DbRole.STANDBY if primary else DbRole.PRIMARY,
        timeline=2,
        lsn=lsn - 512 if primary else lsn,
        receive_lsn=lsn if primary else 0,
        replay_lag_s=0.25 if primary else 0.0,
        serving=not primary,
        vip_held=not primary,
        streaming=primary,
        reason="standby: streaming" if primary else "serving as primary",
    )
    return replace(view, **changes)


UNREACHABLE = PeerView(reachable=False, silent_for=4.2)


def status(
    node: str = "esc-ha-0",
    peer_name: str = "esc-ha-1",
    *,
    state: str = "MASTER",
    role: str = "primary",
    lsn: int = 0x3000100,
    peer: PeerView | None = None,
    **changes: Any,
) -> StatusView:
    """What the agent's GET /status says, typed (the shape of Agent._status)."""
    primary = role == "primary"
    db = DbStatus(
        role=DbRole(role),
        timeline=2,
        lsn=lsn,
        receive_lsn=0 if primary else lsn + 2048,
        streaming=not primary,
        sync_standby=peer_name if primary else None,
        sync_names=peer_name if primary else "",
        replay_lag_s=0.0 if primary else 1.25,
        streaming_to=(peer_name,) if primary else (),
    )
    view = StatusView(
        node=node,
        peer_name=peer_name,
        state=NodeState(state),
        since=T0 - 60,
        reason=f"serving: peer BACKUP, sync standby {peer_name}" if primary else "following",
        rule="serve/in-sync" if primary else "standby",
        vrrp=state,
        vip="192.0.2.100",
        ha_mode="drbd",
        vip_held=primary,
        anycast=None,
        announced=False,
        bgp=None,
        db=db,
        service=ServiceView(active=primary, healthy=True),
        peer=peer if peer is not None else peer_of(primary, lsn),
        gateway_ok=None,
        policy="available",
        forced=False,
        peer_outdated_from=None,
        self_outdated_from=None,
        degraded_since=None,
        alone_transactions=None,
        alone_wal_bytes=None,
        switchover=False,
        last_transition=Transition(
            T0 - 60, "SWITCHING", state, "promoted self: peer silent 1.1s, replay lag 0 B"
        ),
    )
    return replace(view, **changes)


def status_dict(**kw: Any) -> dict[str, Any]:
    """The same as the agent's local socket answers it."""
    return status_json(status(**kw))
