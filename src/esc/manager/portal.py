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
import base64
import hashlib
import html
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
from esc.manager.auth import Authenticator, CredentialCheck
from esc.manager.service import Manager
from esc.model import fmt_lsn as model_fmt_lsn
from esc.unixhttp import UnixHTTPConnection, request

log = logging.getLogger(__name__)

AGENT_SOCKET = "agent.sock"  # the agent's local API (esc.agent.main), root only
REFRESH_S = 2
DEPLOYMENTS_SHOWN = 200
TRANSACTIONS_SHOWN = 20
TRANSITIONS_SHOWN = 10
NOT_REPORTED = "not reported"

Row = dict[str, str | list[str]]
View = dict[str, Any]


# --- the data ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    """One read of everything the page shows; None where that part could not be read."""

    node_name: str  # this node, known even when its agent does not answer
    taken_at: float  # epoch seconds
    agent: Mapping[str, Any] | None  # the local agent's GET /status (its view of the peer too)
    history: Sequence[Mapping[str, Any]]  # the local agent's transitions, oldest first
    deployments: Sequence[Mapping[str, Any]] | None  # store.list_deployments rows
    transactions: Sequence[Mapping[str, Any]] | None  # store.list_transactions, newest first
    anycast_ip: str | None = None  # configured BGP anycast address, if any
    errors: tuple[str, ...] = ()


class PortalSource(Protocol):
    async def snapshot(self) -> Snapshot: ...


class ServiceRole(Protocol):
    """Whether this node serves, and whom to name when it does not (the Manager has these)."""

    @property
    def node_name(self) -> str: ...
    @property
    def active(self) -> bool: ...
    @property
    def primary(self) -> str | None: ...
    @property
    def primary_url(self) -> str | None: ...


# --- formatting (pure) ---------------------------------------------------------------------


def esc(value: object) -> str:
    """The one way a value enters the HTML: text and attribute values alike."""
    return html.escape("" if value is None else str(value), quote=True)


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


def fmt_transition(item: Mapping[str, Any] | None) -> str:
    if not item:
        return "none recorded"
    return (
        f"{fmt_time(item.get('time'))} {item.get('from', '?')} \u2192 {item.get('to', '?')}: "
        f"{item.get('reason', '')}"
    )


def _text(value: object, missing: str = "?") -> str:
    return missing if value is None or value == "" else str(value)


# --- the view (pure) -----------------------------------------------------------------------


def _local_row(st: Mapping[str, Any], history: Sequence[Mapping[str, Any]]) -> Row:
    db: Mapping[str, Any] = st.get("db") or {}
    svc: Mapping[str, Any] = st.get("service") or {}
    role = _text(db.get("role") or st.get("role"))
    if role == "primary":
        sync = db.get("sync_standby")
        to = [str(s) for s in db.get("streaming_to") or ()]
        replication = f"primary, {f'sync standby {sync}' if sync else 'asynchronous'}, " + (
            f"streaming to {', '.join(to)}" if to else "no standby streaming"
        )
        lag = "\u2014"
    elif role == "standby":
        replication = "standby, " + ("streaming" if db.get("streaming") else "NOT streaming")
        behind = max(0, int(db.get("receive_lsn") or 0) - int(db.get("lsn") or 0))
        lag = (
            f"replay {float(db.get('replay_lag_s') or 0.0):.1f} s, "
            f"{fmt_bytes(behind)} received not replayed"
        )
    else:
        replication, lag = role, "\u2014"
    if st.get("degraded"):
        replication += "; DEGRADED: peer outdated"
    if st.get("self_outdated_from") is not None:
        replication += "; OUTDATED: may not become primary"
    service = "active" if svc.get("active") else "inactive"
    if not svc.get("healthy", True):
        service += ", UNHEALTHY"
    last = st.get("last_transition") or (history[-1] if history else None)
    return {
        "node": _text(st.get("node")),
        "seen_from": "this node",
        "state": _text(st.get("state")),
        "db_role": role,
        "timeline": _text(db.get("timeline")),
        "lsn": _text(db.get("lsn_text")) if db.get("lsn_text") else fmt_lsn(db.get("lsn")),
        "replication": replication,
        "lag": lag,
        "vip": "held" if st.get("vip_held") else "not held",
        "service": service,
        "last_transition": fmt_transition(last),
        "reason": _text(st.get("reason")),
        "contact": "its agent answered",
    }


def _peer_row(st: Mapping[str, Any]) -> Row:
    peer: Mapping[str, Any] = st.get("peer") or {}
    db: Mapping[str, Any] = st.get("db") or {}
    name = _text(st.get("peer_name"))
    silent = peer.get("silent_for")
    silent_s = float(silent) if isinstance(silent, int | float) else math.inf
    unknown = "?"
    row: Row = {
        "node": name,
        "seen_from": f"peer of {_text(st.get('node'))}",
        "last_transition": NOT_REPORTED,
        "reason": _text(peer.get("reason")) if peer.get("reason") else NOT_REPORTED,
    }
    if not peer.get("reachable"):
        contact = "never answered" if not math.isfinite(silent_s) else f"silent {silent_s:.1f} s"
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
    role = _text(peer.get("db_role"))
    lag = "\u2014"
    if role == "standby":
        replication = "standby, " + ("streaming" if peer.get("streaming") else "NOT streaming")
        if db.get("sync_standby") == name:
            replication += ", synchronous"
        parts = []
        if "replay_lag_s" in peer:  # published by newer agents only
            parts.append(f"replay {float(peer.get('replay_lag_s') or 0.0):.1f} s")
        if db.get("role") == "primary":
            # both LSNs as last published (the peer's is up to one poll old): an estimate
            behind = max(0, int(db.get("lsn") or 0) - int(peer.get("lsn") or 0))
            parts.append(f"\u2248 {fmt_bytes(behind)} behind")
        lag = ", ".join(parts) or lag
    else:
        replication = role
    return row | {
        "state": _text(peer.get("state")),
        "db_role": role,
        "timeline": _text(peer.get("timeline")),
        "lsn": fmt_lsn(peer.get("lsn")),
        "replication": replication,
        "lag": lag,
        "vip": "held" if peer.get("vip_held") else "not held",
        "service": "active" if peer.get("serving") else "inactive",
        "contact": f"answered {silent_s:.1f} s ago",
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
    if st.get("peer_name"):
        rows.append(_peer_row(st))
    return sorted(rows, key=lambda r: str(r["node"]))


def _holders(st: Mapping[str, Any], flag: str) -> str:
    """Who has ``flag`` (vip_held, announced) set: this node, the reachable peer, or both."""
    peer: Mapping[str, Any] = st.get("peer") or {}
    held = []
    if st.get(flag):
        held.append(_text(st.get("node")))
    if peer.get("reachable") and peer.get(flag):
        held.append(_text(st.get("peer_name")))
    if not held:
        return "nobody"
    return held[0] if len(held) == 1 else f"{' and '.join(sorted(held))} (BOTH)"


def vip_line(snap: Snapshot) -> str:
    st = snap.agent
    if st is None:
        return "unknown (agent not answering)"
    if not st.get("vip"):
        return "no VIP configured"
    return f"{st['vip']} held by {_holders(st, 'vip_held')}"


def anycast_line(snap: Snapshot) -> str:
    st = snap.agent
    if not snap.anycast_ip:
        return "not configured"
    if st is None or "announced" not in st:  # the agent's status does not say (yet)
        return f"{snap.anycast_ip}: announcing node {NOT_REPORTED} by the agent"
    return f"{snap.anycast_ip} announced by {_holders(st, 'announced')}"


def primary_line(rows: Sequence[Row]) -> str:
    masters = [str(r["node"]) for r in rows if r.get("state") == "MASTER"]
    if not masters:
        return "none"
    return masters[0] if len(masters) == 1 else f"{' and '.join(masters)} (BOTH MASTER)"


def transition_rows(snap: Snapshot) -> list[Row]:
    name = str((snap.agent or {}).get("node") or snap.node_name)
    recent = list(snap.history)[-TRANSITIONS_SHOWN:]
    return [
        {
            "time": fmt_time(it.get("time")),
            "node": name,
            "from": _text(it.get("from")),
            "to": _text(it.get("to")),
            "reason": _text(it.get("reason"), ""),
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


# --- the page (pure) -----------------------------------------------------------------------


@dataclass(frozen=True)
class Table:
    rows: str  # the view's key, also the table's id
    title: str
    key: str | None  # the field naming a row: data-<key>="..." on the row and on each cell
    columns: tuple[tuple[str, str], ...]  # (field, heading)


TABLES = (
    Table(
        "nodes",
        "Nodes",
        "node",
        (
            ("node", "Node"),
            ("seen_from", "Seen from"),
            ("state", "State"),
            ("db_role", "Database"),
            ("timeline", "Timeline"),
            ("lsn", "LSN"),
            ("replication", "Replication"),
            ("lag", "Lag"),
            ("vip", "VIP"),
            ("service", "Service"),
            ("last_transition", "Last transition"),
            ("reason", "Current reason"),
            ("contact", "Agent"),
        ),
    ),
    Table(
        "transitions",
        "Recent transitions",
        None,
        (("time", "Time"), ("node", "Node"), ("from", "From"), ("to", "To"), ("reason", "Reason")),
    ),
    Table(
        "deployments",
        "Deployments",
        "deployment",
        (
            ("deployment", "Id"),
            ("tenant", "Tenant"),
            ("name", "Name"),
            ("state", "State"),
            ("vms", "VMs"),
            ("updated_at", "Updated"),
        ),
    ),
    Table(
        "transactions",
        "Recent transactions",
        "transaction",
        (
            ("transaction", "Id"),
            ("operation", "Operation"),
            ("resource", "Resource"),
            ("state", "State"),
            ("code", "Code"),
            ("message", "Message"),
            ("updated_at", "Updated"),
        ),
    ),
)

# The script rebuilds exactly the markup render_table() produces, from status.json, with
# textContent only (never innerHTML). It builds the URL from location.host: a page opened as
# https://user:pass@host/ has credentials in its base URL, and fetch() refuses such URLs.
SCRIPT = """
(() => {
  "use strict";
  const url = location.protocol + "//" + location.host + "/portal/status.json";
  const mark = document.getElementById("refresh");
  let count = 0;
  function cell(td, value) {
    if (Array.isArray(value)) {
      const ul = document.createElement("ul");
      for (const item of value) {
        const li = document.createElement("li");
        li.textContent = String(item);
        ul.appendChild(li);
      }
      td.appendChild(ul);
    } else {
      td.textContent = value == null ? "" : String(value);
      td.dataset.value = td.textContent;
    }
  }
  function fill(table, rows) {
    const key = table.dataset.key;
    const cols = Array.from(table.tHead.rows[0].cells, (th) => th.dataset.col);
    const body = document.createElement("tbody");
    for (const row of rows) {
      const tr = body.insertRow();
      if (key) tr.setAttribute("data-" + key, row[key]);
      for (const col of cols) {
        const td = tr.insertCell();
        if (key) td.setAttribute("data-" + key, row[key]);
        td.dataset.field = col;
        cell(td, row[col]);
      }
    }
    if (!rows.length) {
      const td = body.insertRow().insertCell();
      td.colSpan = cols.length;
      td.className = "empty";
      td.textContent = "none";
    }
    table.replaceChild(body, table.tBodies[0]);
  }
  function render(view) {
    for (const el of document.querySelectorAll("[data-scalar]")) {
      el.textContent = view[el.dataset.scalar] ?? "";
    }
    for (const table of document.querySelectorAll("table[data-rows]")) {
      fill(table, view[table.dataset.rows] || []);
    }
    const errors = document.getElementById("errors");
    errors.replaceChildren(...(view.errors || []).map((text) => {
      const li = document.createElement("li");
      li.textContent = text;
      return li;
    }));
  }
  async function refresh() {
    try {
      const resp = await fetch(url, {
        cache: "no-store", credentials: "same-origin", headers: {Accept: "application/json"},
      });
      if (!resp.ok) throw new Error("HTTP " + resp.status);
      render(await resp.json());
      count += 1;
      document.body.dataset.refreshes = String(count);
      mark.textContent = "live: refreshed every @REFRESH_S@ s";
      mark.dataset.value = "live";
    } catch (err) {
      mark.textContent = "refresh failed (" + err.message + "); retrying";
      mark.dataset.value = "stale";
    }
  }
  setInterval(refresh, @REFRESH_S@ * 1000);
})();
""".replace("@REFRESH_S@", str(REFRESH_S))

STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #1d1d1f; }
h1 { font-size: 1.4em; margin: 0 0 .3em; }
h2 { font-size: 1.1em; margin: 1.4em 0 .4em; }
dl { display: grid; grid-template-columns: max-content auto; gap: .1em 1em; margin: 0; }
dt { color: #666; }
table { border-collapse: collapse; width: 100%; }
th, td { border: 1px solid #ccc; padding: .25em .5em; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
td ul { margin: 0; padding-left: 1.1em; }
td[data-field="node"], td[data-field="state"], td[data-field="lsn"] { white-space: nowrap; }
td.empty { color: #888; font-style: italic; }
td[data-field="state"][data-value="MASTER"] { background: #d8f5d8; font-weight: bold; }
td[data-field="state"][data-value="BACKUP"] { background: #dde8fb; font-weight: bold; }
td[data-field="state"][data-value="UNREACHABLE"],
td[data-field="state"][data-value="FAULT"],
td[data-field="state"][data-value="FAILED"] { background: #fbdada; font-weight: bold; }
#errors li { color: #a00; }
#refresh[data-value="stale"] { color: #a00; }
"""


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


# Only this page's own script and style run; it may fetch from its own origin, nothing else.
CSP = (
    f"default-src 'none'; script-src {_csp_hash(SCRIPT)}; style-src {_csp_hash(STYLE)}; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}
JSON_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


def _cell(value: str | list[str]) -> str:
    if isinstance(value, list):
        return "<ul>" + "".join(f"<li>{esc(v)}</li>" for v in value) + "</ul>"
    return esc(value)


def render_table(table: Table, rows: Sequence[Row]) -> str:
    head = "".join(f'<th data-col="{esc(f)}">{esc(title)}</th>' for f, title in table.columns)
    body = []
    for row in rows:
        key = f' data-{table.key}="{esc(row.get(table.key, ""))}"' if table.key else ""
        cells = []
        for field, _ in table.columns:
            value = row.get(field, "")
            data_value = "" if isinstance(value, list) else f' data-value="{esc(value)}"'
            cells.append(f'<td{key} data-field="{esc(field)}"{data_value}>{_cell(value)}</td>')
        body.append(f"<tr{key}>{''.join(cells)}</tr>")
    if not rows:
        body.append(f'<tr><td colspan="{len(table.columns)}" class="empty">none</td></tr>')
    key_attr = f' data-key="{esc(table.key)}"' if table.key else ""
    return (
        f'<h2>{esc(table.title)}</h2><table id="{esc(table.rows)}" data-rows="{esc(table.rows)}"'
        f"{key_attr}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    )


def _scalar(view: View, name: str) -> str:
    return f'<span data-scalar="{esc(name)}">{esc(view.get(name, ""))}</span>'


def render_page(view: View) -> str:
    summary = "".join(
        f"<dt>{esc(label)}</dt><dd>{_scalar(view, name)}</dd>"
        for name, label in (
            ("primary", "Primary"),
            ("vip", "VIP"),
            ("anycast", "Anycast"),
            ("served_by", "Served by"),
            ("generated_at", "Generated"),
        )
    )
    errors = "".join(f"<li>{esc(e)}</li>" for e in view.get("errors", []))
    tables = "".join(render_table(t, view.get(t.rows, [])) for t in TABLES)
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        "<title>ESC-HA portal</title>"
        # without JavaScript the page still refreshes itself, only less smoothly
        f'<noscript><meta http-equiv="refresh" content="{REFRESH_S * 2}"></noscript>'
        f"<style>{STYLE}</style></head>"
        '<body data-refreshes="0"><h1>ESC-HA controller pair</h1>'
        f"<dl>{summary}<dt>Refresh</dt><dd>"
        '<span id="refresh" data-value="server">as rendered by the server</span></dd></dl>'
        f'<ul id="errors">{errors}</ul>{tables}'
        f"<script>{SCRIPT}</script></body></html>"
    )


def inactive_page(role: ServiceRole) -> str:
    primary = role.primary or "unknown"
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="refresh" content="{REFRESH_S}">'
        "<title>ESC-HA portal: not the primary</title></head><body>"
        f'<p id="inactive">This node (<span data-scalar="served_by">{esc(role.node_name)}</span>)'
        ' is not the primary. The primary is <span data-scalar="primary">'
        f"{esc(primary)}</span>.</p></body></html>"
    )


# --- the app -------------------------------------------------------------------------------


class PortalGate:
    """503 naming the primary while this node is inactive, before credentials (as the API):
    an HTML page for ``/`` (it reloads itself), the API's JSON body for everything else."""

    def __init__(self, app: ASGIApp, role: ServiceRole) -> None:
        self.app = app
        self.role = role

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.role.active:
            await self.app(scope, receive, send)
            return
        headers = {"Retry-After": "1", "Cache-Control": "no-store"}
        resp: Response
        if scope.get("path") == "/":
            resp = HTMLResponse(inactive_page(self.role), status_code=503, headers=headers)
        else:
            body = {
                "detail": f"this node ({self.role.node_name}) is not the primary",
                "primary": self.role.primary,
                "primary_url": self.role.primary_url,
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

    def _read_agent(
        self,
    ) -> tuple[dict[str, Any] | None, list[dict[str, Any]], str | None]:
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
        items = body.get("history") if code == 200 else None
        history = [i for i in items if isinstance(i, dict)] if isinstance(items, list) else []
        return status, history, None

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
        paths.run_dir / AGENT_SOCKET,
        anycast_ip=str(cfg.bgp.anycast_ip) if cfg.bgp else None,
    )
    return build_portal(source, manager, Authenticator(manager.pool))
