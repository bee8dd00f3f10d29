"""The operator portal: one self-refreshing page on ``manager.portal_port`` (HTTPS, the API's
certificate and users) showing both nodes, the deployments with their VMs and recent transactions.

    GET /                     the page, rendered on the server (readable without JavaScript)
    GET /portal/status.json   the same view as JSON; the page's script re-fetches it every 2 s

Checks in front of the routes, in the API's order: an inactive node answers 503 naming the
primary (before credentials), then HTTP basic credentials (401).

Both nodes come from the LOCAL agent's status, which carries its last view of the peer, so the
page works while the peer is dead. What that status does not carry is shown as "not reported":
the peer's transitions and reasons, the anycast route's holder.

The rule of this module: turning a :class:`Snapshot` into what is shown (``build_view``,
``render_page``) is pure, and every value that reaches the HTML goes through :func:`esc`. I/O is
only in :class:`LiveSource`; tests give the app a fake source.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import psycopg
from fastapi import FastAPI
from fastapi.responses import HTMLResponse, JSONResponse, Response
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from starlette.types import ASGIApp, Receive, Scope, Send

from esc.config.schema import EscConfig, NodePaths
from esc.errors import DriverError
from esc.manager import store
from esc.manager.api import BasicAuth
from esc.manager.auth import CredentialCheck
from esc.manager.portal_page import (
    JSON_HEADERS,
    PAGE_HEADERS,
    Row,
    ServiceRole,
    View,
    inactive_page,
    render_page,
)
from esc.manager.service import Manager
from esc.model import DbRole
from esc.model import fmt_lsn as model_fmt_lsn
from esc.status_view import StatusView, Transition, parse_status, parse_transition
from esc.unixhttp import UnixHTTPConnection, request

log = logging.getLogger(__name__)

DEPLOYMENTS_SHOWN = 200
TRANSACTIONS_SHOWN = 20
TRANSITIONS_SHOWN = 10
NOT_REPORTED = "not reported"


# --- the data ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    """One read of everything the page shows; None where that part could not be read."""

    node_name: str  # this node, known even when its agent does not answer
    taken_at: float  # epoch seconds
    agent: StatusView | None  # the local agent's GET /status (its view of the peer too)
    history: Sequence[Transition]  # the local agent's transitions, oldest first
    deployments: Sequence[Mapping[str, Any]] | None  # store.list_deployments rows
    transactions: Sequence[Mapping[str, Any]] | None  # store.list_transactions, newest first
    anycast_ip: str | None = None  # configured BGP anycast address, if any
    errors: tuple[str, ...] = ()


class PortalSource(Protocol):
    async def snapshot(self) -> Snapshot: ...


# --- formatting (pure) ---------------------------------------------------------------------


def fmt_time(epoch: object) -> str:
    if not isinstance(epoch, int | float) or not math.isfinite(epoch):
        return "?"
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def fmt_iso(text: object) -> str:
    """The store's ``2024-05-01T10:00:00.123456Z`` as ``2024-05-01 10:00:00 UTC``."""
    if not isinstance(text, str) or not text:
        return "?"
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return text
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def fmt_lsn(lsn: object) -> str:
    """An LSN from a status JSON, which may be anything: '?' unless it is one."""
    if isinstance(lsn, bool) or not isinstance(lsn, int) or lsn < 0:
        return "?"
    return model_fmt_lsn(lsn)


def fmt_bytes(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    size = n / 1024
    for unit in ("KiB", "MiB"):
        if size < 1024:
            return f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def fmt_transition(item: Transition | None) -> str:
    if item is None:
        return "none recorded"
    return f"{fmt_time(item.time)} {item.from_state} \u2192 {item.to_state}: {item.reason}"


def _text(value: object, missing: str = "?") -> str:
    return missing if value is None or value == "" else str(value)


# --- the view (pure) -----------------------------------------------------------------------


def _local_row(st: StatusView, history: Sequence[Transition]) -> Row:
    db, svc = st.db, st.service
    role = db.role.value
    if db.role is DbRole.PRIMARY:
        sync, to = db.sync_standby, db.streaming_to
        replication = f"primary, {f'sync standby {sync}' if sync else 'asynchronous'}, " + (
            f"streaming to {', '.join(to)}" if to else "no standby streaming"
        )
        lag = "\u2014"
    elif db.role is DbRole.STANDBY:
        replication = "standby, " + ("streaming" if db.streaming else "NOT streaming")
        behind = max(0, db.receive_lsn - db.lsn)
        lag = f"replay {db.replay_lag_s:.1f} s, {fmt_bytes(behind)} received not replayed"
    else:
        replication, lag = role, "\u2014"
    if st.degraded:
        replication += "; DEGRADED: peer outdated"
    if st.self_outdated_from is not None:
        replication += "; OUTDATED: may not become primary"
    service = "active" if svc.active else "inactive"
    if not svc.healthy:
        service += ", UNHEALTHY"
    last = st.last_transition or (history[-1] if history else None)
    return {
        "node": _text(st.node),
        "seen_from": "this node",
        "state": st.state.value,
        "db_role": role,
        "timeline": str(db.timeline),
        "lsn": fmt_lsn(db.lsn),
        "replication": replication,
        "lag": lag,
        "vip": "held" if st.vip_held else "not held",
        "service": service,
        "last_transition": fmt_transition(last),
        "reason": _text(st.reason),
        "contact": "its agent answered",
    }


def _peer_row(st: StatusView) -> Row:
    peer, db = st.peer, st.db
    name = _text(st.peer_name)
    unknown = "?"
    row: Row = {
        "node": name,
        "seen_from": f"peer of {_text(st.node)}",
        "last_transition": NOT_REPORTED,
        "reason": _text(peer.reason) if peer.reason else NOT_REPORTED,
    }
    if not peer.reachable:
        silent = peer.silent_for
        contact = "never answered" if not math.isfinite(silent) else f"silent {silent:.1f} s"
        return row | {
            "state": "UNREACHABLE",
            "db_role": unknown,
            "timeline": unknown,
            "lsn": unknown,
            "replication": unknown,
            "lag": unknown,
            "vip": unknown,
            "service": unknown,
            "contact": contact,
        }
    role = _text(peer.db_role)
    lag = "\u2014"
    if peer.db_role is DbRole.STANDBY:
        replication = "standby, " + ("streaming" if peer.streaming else "NOT streaming")
        if db.sync_standby == name:
            replication += ", synchronous"
        parts = [f"replay {peer.replay_lag_s:.1f} s"]
        if db.role is DbRole.PRIMARY:
            # both LSNs as last published (the peer's is up to one poll old): an estimate
            parts.append(f"\u2248 {fmt_bytes(max(0, db.lsn - peer.lsn))} behind")
        lag = ", ".join(parts)
    else:
        replication = role
    return row | {
        "state": _text(peer.state),
        "db_role": role,
        "timeline": str(peer.timeline),
        "lsn": fmt_lsn(peer.lsn),
        "replication": replication,
        "lag": lag,
        "vip": "held" if peer.vip_held else "not held",
        "service": "active" if peer.serving else "inactive",
        "contact": f"answered {peer.silent_for:.1f} s ago",
    }


def node_rows(snap: Snapshot) -> list[Row]:
    """Both nodes as table rows, ordered by name (a failover changes cells, not row order)."""
    st = snap.agent
    if st is None:
        row: Row = dict.fromkeys(
            ("db_role", "timeline", "lsn", "replication", "lag", "vip", "service", "reason"), "?"
        )
        row |= {
            "node": snap.node_name,
            "seen_from": "this node",
            "state": "UNKNOWN",
            "last_transition": fmt_transition(snap.history[-1] if snap.history else None),
            "contact": "its agent does not answer",
        }
        return [row]
    rows = [_local_row(st, snap.history)]
    if st.peer_name:
        rows.append(_peer_row(st))
    return sorted(rows, key=lambda r: str(r["node"]))


def _holders(st: StatusView, flag: str) -> str:
    """Who has ``flag`` (vip_held, announced) set: this node, the reachable peer, or both."""
    held = []
    if getattr(st, flag):
        held.append(_text(st.node))
    if st.peer.reachable and getattr(st.peer, flag):
        held.append(_text(st.peer_name))
    if not held:
        return "nobody"
    return held[0] if len(held) == 1 else f"{' and '.join(sorted(held))} (BOTH)"


def vip_line(snap: Snapshot) -> str:
    st = snap.agent
    if st is None:
        return "unknown (agent not answering)"
    if not st.vip:
        return "no VIP configured"
    return f"{st.vip} held by {_holders(st, 'vip_held')}"


def anycast_line(snap: Snapshot) -> str:
    st = snap.agent
    if not snap.anycast_ip:
        return "not configured"
    if st is None:
        return f"{snap.anycast_ip}: announcing node {NOT_REPORTED} by the agent"
    return f"{snap.anycast_ip} announced by {_holders(st, 'announced')}"


def primary_line(rows: Sequence[Row]) -> str:
    masters = [str(r["node"]) for r in rows if r.get("state") == "MASTER"]
    if not masters:
        return "none"
    return masters[0] if len(masters) == 1 else f"{' and '.join(masters)} (BOTH MASTER)"


def transition_rows(snap: Snapshot) -> list[Row]:
    name = snap.agent.node if snap.agent is not None else snap.node_name
    recent = list(snap.history)[-TRANSITIONS_SHOWN:]
    return [
        {
            "time": fmt_time(it.time),
            "node": name,
            "from": _text(it.from_state),
            "to": _text(it.to_state),
            "reason": _text(it.reason, ""),
        }
        for it in reversed(recent)
    ]


def vm_line(vm: Mapping[str, Any]) -> str:
    return f"{_text(vm.get('name'))} ({_text(vm.get('vm_group'))}): {_text(vm.get('state'))}"


def deployment_rows(deployments: Sequence[Mapping[str, Any]] | None) -> list[Row]:
    """Newest first, each with its VMs in order."""
    return [
        {
            "deployment": _text(d.get("id")),
            "tenant": _text(d.get("tenant")),
            "name": _text(d.get("name")),
            "state": _text(d.get("state")),
            "vms": [vm_line(vm) for vm in d.get("vms") or ()],
            "updated_at": fmt_iso(d.get("updated_at")),
        }
        for d in reversed(list(deployments or ()))
    ]


def transaction_rows(transactions: Sequence[Mapping[str, Any]] | None) -> list[Row]:
    return [
        {
            "transaction": _text(t.get("id")),
            "operation": _text(t.get("operation")),
            "resource": f"{_text(t.get('resource_type'))} {_text(t.get('resource_id'), '')}",
            "state": _text(t.get("state")),
            "code": _text(t.get("status_code"), ""),
            "message": _text(t.get("message"), ""),
            "updated_at": fmt_iso(t.get("updated_at")),
        }
        for t in transactions or ()
    ]


def build_view(snap: Snapshot) -> View:
    """Everything the page shows, as display strings (also the body of status.json)."""
    nodes = node_rows(snap)
    return {
        "generated_at": fmt_time(snap.taken_at),
        "served_by": snap.node_name,
        "primary": primary_line(nodes),
        "vip": vip_line(snap),
        "anycast": anycast_line(snap),
        "errors": list(snap.errors),
        "nodes": nodes,
        "transitions": transition_rows(snap),
        "deployments": deployment_rows(snap.deployments),
        "transactions": transaction_rows(snap.transactions),
    }


# --- the app -------------------------------------------------------------------------------


class PortalGate:
    """503 naming the primary while this node is inactive, before credentials (as the API):
    an HTML page for ``/`` (it reloads itself), the API's JSON body for everything else."""

    def __init__(self, app: ASGIApp, role: ServiceRole) -> None:
        self.app = app
        self.role = role

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.role.serving:
            await self.app(scope, receive, send)
            return
        headers = {"Retry-After": "1", "Cache-Control": "no-store"}
        resp: Response
        if scope.get("path") == "/":
            resp = HTMLResponse(inactive_page(self.role), status_code=503, headers=headers)
        else:
            body = {
                "detail": f"this node ({self.role.node_name}) is not the primary",
                # active but not serving: its lease ran out, the primary is not known here
                "primary": None if self.role.active else self.role.primary,
                "primary_url": None if self.role.active else self.role.primary_url,
            }
            resp = JSONResponse(body, status_code=503, headers=headers)
        await resp(scope, receive, send)


def build_portal(source: PortalSource, role: ServiceRole, auth: CredentialCheck) -> ASGIApp:
    app = FastAPI(title="ESC-HA portal", openapi_url=None, docs_url=None, redoc_url=None)

    @app.get("/", response_class=HTMLResponse)
    async def page() -> HTMLResponse:
        view = build_view(await source.snapshot())
        return HTMLResponse(render_page(view), headers=PAGE_HEADERS)

    @app.get("/portal/status.json")
    async def status() -> JSONResponse:
        return JSONResponse(build_view(await source.snapshot()), headers=JSON_HEADERS)

    return PortalGate(BasicAuth(app, auth), role)


# --- the real source (I/O) ----------------------------------------------------------------

_DB_ERRORS = (psycopg.Error, PoolTimeout, OSError, TimeoutError)


class LiveSource:
    """The local agent's status and transitions, and the database's deployments and
    transactions. One read serves every request within ``max_age_s``, so open pages (each
    refreshing every 2 s) cost the agent and the database one read per second at most."""

    def __init__(
        self,
        node_name: str,
        pool: AsyncConnectionPool[Any],
        agent_sock: Path,
        anycast_ip: str | None = None,
        timeout: float = 2.0,
        max_age_s: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.node_name = node_name
        self.pool = pool
        self.agent_sock = agent_sock
        self.anycast_ip = anycast_ip
        self.timeout = timeout
        self.max_age_s = max_age_s
        self.clock = clock
        self._last: Snapshot | None = None
        self._lock = asyncio.Lock()

    async def snapshot(self) -> Snapshot:
        async with self._lock:
            now = self.clock()
            last = self._last
            if last is not None and 0 <= now - last.taken_at < self.max_age_s:
                return last
            (agent, history, agent_err), (deps, txs, db_err) = await asyncio.gather(
                asyncio.to_thread(self._read_agent), self._read_db()
            )
            errors = tuple(e for e in (agent_err, db_err) if e)
            self._last = Snapshot(
                self.node_name, now, agent, history, deps, txs, self.anycast_ip, errors
            )
            return self._last

    def _read_agent(self) -> tuple[StatusView | None, list[Transition], str | None]:
        try:
            code, status = request(
                UnixHTTPConnection(self.agent_sock, self.timeout), "GET", "/status"
            )
            if code != 200:
                raise DriverError(f"GET /status answered {code}")
            code, body = request(
                UnixHTTPConnection(self.agent_sock, self.timeout), "GET", "/history"
            )
        except DriverError as exc:
            log.debug("portal: agent: %s", exc)
            return None, [], f"agent of {self.node_name} not answering: {exc}"
        try:
            view = parse_status(status)
            items = body.get("history") if code == 200 else None
            history = [parse_transition(i) for i in items] if isinstance(items, list) else []
        except DriverError as exc:
            log.warning("portal: agent: %s", exc)
            return None, [], f"agent of {self.node_name}: its answer is not readable: {exc}"
        return view, history, None

    async def _read_db(
        self,
    ) -> tuple[list[store.Json] | None, list[store.Json] | None, str | None]:
        try:
            async with asyncio.timeout(self.timeout), self.pool.connection() as conn:
                deps = (await store.list_deployments(conn, None, DEPLOYMENTS_SHOWN)).items
                txs = (await store.list_transactions(conn, None, TRANSACTIONS_SHOWN)).items
                await conn.rollback()
        except _DB_ERRORS as exc:
            log.debug("portal: database: %s", exc)
            return None, None, f"database unavailable: {exc or type(exc).__name__}"
        return deps, txs, None


def live_portal(cfg: EscConfig, paths: NodePaths, manager: Manager) -> ASGIApp:
    """The portal esc-manager serves: this node's agent and database, the API's users."""
    source = LiveSource(
        cfg.node_name,
        manager.pool,
        paths.agent_status_socket,
        anycast_ip=str(cfg.bgp.anycast_ip) if cfg.bgp else None,
    )
    return build_portal(source, manager, manager.authenticator)
