"""The portal's page: the tables and the HTML, with its script and style (both hashed into
the Content-Security-Policy), and the page an inactive node answers. Pure: a view (built by
``esc.manager.portal.build_view``) in, text out; every value that reaches the HTML goes
through :func:`esc`."""

from __future__ import annotations

import base64
import hashlib
import html
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

REFRESH_S = 2

Row = dict[str, str | list[str]]
View = dict[str, Any]


class ServiceRole(Protocol):
    """Whether this node serves, and whom to name when it does not (the Manager has these)."""

    @property
    def node_name(self) -> str: ...
    @property
    def active(self) -> bool: ...
    @property
    def serving(self) -> bool: ...
    @property
    def primary(self) -> str | None: ...
    @property
    def primary_url(self) -> str | None: ...


def esc(value: object) -> str:
    """The one way a value enters the HTML: text and attribute values alike."""
    return html.escape("" if value is None else str(value), quote=True)


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
