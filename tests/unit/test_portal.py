"""The operator portal: status dicts → view rows → HTML, escaping, and the app's checks
(inactive 503 before credentials, 401) with a fake data source. No database, no mocks."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import math
import re
from dataclasses import dataclass, field, replace
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.types import ASGIApp
from statuses import T0, UNREACHABLE, status

from esc.agent.api import serve_unix
from esc.config.schema import parse_config
from esc.errors import ConfigError
from esc.manager.auth import Verdict
from esc.manager.db import make_pool
from esc.manager.portal import (
    LiveSource,
    Snapshot,
    anycast_line,
    build_portal,
    build_view,
    deployment_rows,
    fmt_bytes,
    fmt_iso,
    fmt_lsn,
    fmt_time,
    node_rows,
    primary_line,
    transaction_rows,
    transition_rows,
    vip_line,
)
from esc.manager.portal_page import CSP, SCRIPT, STYLE, render_page
from esc.model import NodeState
from esc.status_view import StatusView, Transition, status_json

agent_status = status  # what the agent's GET /status answers, typed (tests/unit/statuses.py)


DEPLOYMENT = {
    "id": "6f1c7a2e-0000-4000-8000-000000000001",
    "tenant": "acme",
    "name": "web",
    "state": "DEPLOYED",
    "vm_groups": [],
    "vms": [
        {"name": "web-g1-0", "vm_group": "g1", "state": "ACTIVE"},
        {"name": "web-g1-1", "vm_group": "g1", "state": "CREATING"},
    ],
    "created_at": "2023-11-14T22:00:00.123456Z",
    "updated_at": "2023-11-14T22:01:00.5Z",
}
TRANSACTION = {
    "id": "dep-web-1",
    "operation": "CREATE_DEPLOYMENT",
    "resource_type": "deployment",
    "resource_id": DEPLOYMENT["id"],
    "state": "SUCCESS",
    "status_code": 200,
    "message": "deployment web deployed",
    "created_at": "2023-11-14T22:00:00Z",
    "updated_at": "2023-11-14T22:01:00Z",
}


def snap(agent: StatusView | None = None, **kw: Any) -> Snapshot:
    base = Snapshot(
        node_name="esc-ha-0",
        taken_at=T0,
        agent=agent_status() if agent is None else agent,
        history=[
            Transition(T0 - 120, "STOP", "SWITCHING", "agent started"),
            Transition(T0 - 60, "SWITCHING", "MASTER", "promoted self"),
        ],
        deployments=[DEPLOYMENT],
        transactions=[TRANSACTION],
    )
    return replace(base, **kw)


def by_node(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["node"]: r for r in rows}


# --- formatting ------------------------------------------------------------------------------


def test_formatting_helpers() -> None:
    assert fmt_lsn(0x3000060) == "0/3000060"
    assert fmt_lsn((1 << 32) + 0xAB) == "1/AB"
    assert fmt_lsn(None) == "?"
    assert fmt_lsn(True) == "?"  # a bool is not an LSN (it was "0/1")
    assert [fmt_bytes(n) for n in (0, 1023, 1536, 5 * 2**20, 3 * 2**30)] == [
        "0 B",
        "1023 B",
        "1.5 KiB",
        "5.0 MiB",
        "3.0 GiB",
    ]
    assert fmt_time(T0) == "2023-11-14 22:13:20 UTC"
    assert fmt_time(math.inf) == fmt_time(None) == fmt_time("x") == "?"
    assert fmt_iso("2023-11-14T22:01:00.5Z") == "2023-11-14 22:01:00 UTC"
    assert fmt_iso("garbage") == "garbage"


# --- the view --------------------------------------------------------------------------------


def test_healthy_pair_seen_from_the_primary() -> None:
    rows = node_rows(snap())
    assert [r["node"] for r in rows] == ["esc-ha-0", "esc-ha-1"]
    a, b = rows
    assert (a["seen_from"], a["state"], a["db_role"], a["vip"], a["service"]) == (
        "this node",
        "MASTER",
        "primary",
        "held",
        "active",
    )
    assert a["replication"] == "primary, sync standby esc-ha-1, streaming to esc-ha-1"
    assert a["reason"] == "serving: peer BACKUP, sync standby esc-ha-1"
    assert a["last_transition"] == (
        "2023-11-14 22:12:20 UTC SWITCHING \u2192 MASTER: "
        "promoted self: peer silent 1.1s, replay lag 0 B"
    )
    assert (b["seen_from"], b["state"], b["db_role"], b["vip"], b["service"]) == (
        "peer of esc-ha-0",
        "BACKUP",
        "standby",
        "not held",
        "inactive",
    )
    assert b["replication"] == "standby, streaming, synchronous"
    assert b["lag"] == "replay 0.2 s, \u2248 512 B behind"
    assert b["lsn"] == "0/2FFFF00"
    assert b["contact"] == "answered 0.4 s ago"
    # the agent status carries only the peer's current view: its reason, not its transitions
    assert (b["last_transition"], b["reason"]) == ("not reported", "standby: streaming")
    view = build_view(snap())
    assert view["primary"] == "esc-ha-0"
    assert view["vip"] == "192.0.2.100 held by esc-ha-0"
    assert view["anycast"] == "not configured"
    assert view["generated_at"] == "2023-11-14 22:13:20 UTC"


def test_after_failover_the_dead_peer_is_unreachable_and_rows_keep_their_order() -> None:
    st = agent_status("esc-ha-1", "esc-ha-0", peer=UNREACHABLE, peer_outdated_from=0x3000000)
    st = replace(st, db=replace(st.db, sync_standby=None, streaming_to=()))
    rows = node_rows(snap(st, node_name="esc-ha-1"))
    assert [r["node"] for r in rows] == ["esc-ha-0", "esc-ha-1"]
    old, new = rows
    assert (old["state"], old["db_role"], old["vip"], old["lag"]) == ("UNREACHABLE", "?", "?", "?")
    assert old["contact"] == "silent 4.2 s"
    assert new["state"] == "MASTER"
    assert new["replication"] == (
        "primary, asynchronous, no standby streaming; DEGRADED: peer outdated"
    )
    assert primary_line(rows) == "esc-ha-1"
    assert vip_line(snap(st)) == "192.0.2.100 held by esc-ha-1"


def test_peer_never_seen() -> None:
    peer = replace(UNREACHABLE, silent_for=math.inf)
    (_, b) = node_rows(snap(agent_status(peer=peer)))
    assert b["contact"] == "never answered"


def test_standby_seen_from_itself_shows_its_replay_lag() -> None:
    st = agent_status("esc-ha-1", "esc-ha-0", state="BACKUP", role="standby")
    rows = by_node(node_rows(snap(st)))
    me, peer = rows["esc-ha-1"], rows["esc-ha-0"]
    assert me["replication"] == "standby, streaming"
    assert me["lag"] == "replay 1.2 s, 2.0 KiB received not replayed"
    assert me["vip"] == "not held"
    assert (peer["state"], peer["db_role"], peer["vip"], peer["service"]) == (
        "MASTER",
        "primary",
        "held",
        "active",
    )
    assert peer["lag"] == "\u2014"


def test_agent_not_answering() -> None:
    s = snap(None, errors=("agent of esc-ha-0 not answering: refused",))
    s = replace(s, agent=None)
    rows = node_rows(s)
    assert len(rows) == 1
    assert (rows[0]["node"], rows[0]["state"]) == ("esc-ha-0", "UNKNOWN")
    assert rows[0]["last_transition"].endswith("SWITCHING \u2192 MASTER: promoted self")
    view = build_view(s)
    assert view["vip"] == "unknown (agent not answering)"
    assert view["primary"] == "none"
    assert view["errors"] == ["agent of esc-ha-0 not answering: refused"]


def test_both_holding_the_vip_is_shown() -> None:
    st = agent_status()
    st = replace(st, peer=replace(st.peer, vip_held=True, state=NodeState.MASTER))
    assert vip_line(snap(st)) == "192.0.2.100 held by esc-ha-0 and esc-ha-1 (BOTH)"
    assert primary_line(node_rows(snap(st))) == "esc-ha-0 and esc-ha-1 (BOTH MASTER)"
    assert vip_line(snap(agent_status(vip=None))) == "no VIP configured"
    silent = replace(snap(anycast_ip="203.0.113.5"), agent=None)  # the agent does not answer
    assert build_view(silent)["anycast"] == (
        "203.0.113.5: announcing node not reported by the agent"
    )
    # an agent that reports the announcement (this node's and, in its peer view, the peer's)
    st = agent_status(announced=True)
    assert anycast_line(snap(st, anycast_ip="203.0.113.5")) == "203.0.113.5 announced by esc-ha-0"
    st = replace(st, peer=replace(st.peer, announced=True))
    assert anycast_line(snap(st, anycast_ip="203.0.113.5")) == (
        "203.0.113.5 announced by esc-ha-0 and esc-ha-1 (BOTH)"
    )
    assert anycast_line(snap(agent_status(announced=False), anycast_ip="203.0.113.5")) == (
        "203.0.113.5 announced by nobody"
    )


def test_peer_replay_lag_when_the_agent_publishes_it() -> None:
    st = agent_status()
    st = replace(st, peer=replace(st.peer, replay_lag_s=0.25, receive_lsn=st.peer.lsn + 96))
    (_, b) = node_rows(snap(st))
    assert b["lag"] == "replay 0.2 s, \u2248 512 B behind"


def test_transitions_deployments_transactions() -> None:
    s = snap()
    assert transition_rows(s) == [
        {
            "time": "2023-11-14 22:12:20 UTC",
            "node": "esc-ha-0",
            "from": "SWITCHING",
            "to": "MASTER",
            "reason": "promoted self",
        },
        {
            "time": "2023-11-14 22:11:20 UTC",
            "node": "esc-ha-0",
            "from": "STOP",
            "to": "SWITCHING",
            "reason": "agent started",
        },
    ]
    older = DEPLOYMENT | {"id": "older", "name": "db", "vms": []}
    deps = deployment_rows([older, DEPLOYMENT])
    assert [d["deployment"] for d in deps] == [DEPLOYMENT["id"], "older"]  # newest first
    assert deps[0]["vms"] == ["web-g1-0 (g1): ACTIVE", "web-g1-1 (g1): CREATING"]
    assert deps[0]["updated_at"] == "2023-11-14 22:01:00 UTC"
    assert deps[1]["vms"] == []
    assert deployment_rows(None) == []
    (tx,) = transaction_rows([TRANSACTION])
    assert tx == {
        "transaction": "dep-web-1",
        "operation": "CREATE_DEPLOYMENT",
        "resource": f"deployment {DEPLOYMENT['id']}",
        "state": "SUCCESS",
        "code": "200",
        "message": "deployment web deployed",
        "updated_at": "2023-11-14 22:01:00 UTC",
    }
    (pending,) = transaction_rows([TRANSACTION | {"status_code": None, "state": "PENDING"}])
    assert pending["code"] == ""


# --- the page --------------------------------------------------------------------------------


@dataclass
class Cell:
    attrs: dict[str, str | None]
    text: str = ""


@dataclass
class Cells(HTMLParser):
    """Every <td> of a page, with its attributes and text, and every element's id."""

    cells: list[Cell] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    scripts: list[str] = field(default_factory=list)
    _in: Cell | None = None
    _script: bool = False

    def __post_init__(self) -> None:
        super().__init__()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        d = dict(attrs)
        if d.get("id"):
            self.ids.append(str(d["id"]))
        if tag == "td":
            self._in = Cell(d)
            self.cells.append(self._in)
        self._script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        if tag == "td":
            self._in = None
        self._script = False

    def handle_data(self, data: str) -> None:
        if self._in is not None:
            self._in.text += data
        if self._script:
            self.scripts.append(data)

    def cell(self, **attrs: str) -> Cell:
        found = [
            c
            for c in self.cells
            if all(c.attrs.get(k.replace("_", "-")) == v for k, v in attrs.items())
        ]
        assert len(found) == 1, (attrs, found)
        return found[0]


def parse(page: str) -> Cells:
    p = Cells()
    p.feed(page)
    p.close()
    return p


def test_page_has_stable_attributes_for_every_cell() -> None:
    page = parse(render_page(build_view(snap())))
    assert page.cell(data_node="esc-ha-0", data_field="state").text == "MASTER"
    assert page.cell(data_node="esc-ha-0", data_field="state").attrs["data-value"] == "MASTER"
    assert page.cell(data_node="esc-ha-1", data_field="state").text == "BACKUP"
    assert page.cell(data_node="esc-ha-1", data_field="db_role").text == "standby"
    dep = page.cell(data_deployment=DEPLOYMENT["id"], data_field="vms")
    assert dep.text == "web-g1-0 (g1): ACTIVEweb-g1-1 (g1): CREATING"
    assert page.cell(data_transaction="dep-web-1", data_field="state").text == "SUCCESS"
    assert {"nodes", "transitions", "deployments", "transactions", "errors", "refresh"} <= set(
        page.ids
    )


def test_empty_tables_say_none() -> None:
    page = parse(render_page(build_view(snap(deployments=None, transactions=[]))))
    empty = [c for c in page.cells if c.attrs.get("class") == "empty"]
    assert [c.text for c in empty] == ["none", "none"]


def test_every_value_is_escaped() -> None:
    evil = '<script>alert("x")</script>'
    attr = 'x" onmouseover="alert(1)'
    st = agent_status(reason=evil, node=attr)
    dep = DEPLOYMENT | {"id": attr, "name": evil, "vms": [{"name": evil, "vm_group": "&"}]}
    tx = TRANSACTION | {"message": evil, "id": "<b>"}
    s = snap(st, deployments=[dep], transactions=[tx], errors=(evil,), node_name=attr)
    html = render_page(build_view(s))
    assert "<script>alert" not in html
    assert 'onmouseover="' not in html
    assert "<b>" not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html
    assert 'data-node="x&quot; onmouseover=&quot;alert(1)"' in html
    # and the parsed page gives the original values back
    page = parse(html)
    assert page.cell(data_node=attr, data_field="reason").text == evil
    assert page.cell(data_deployment=attr, data_field="name").text == evil
    assert page.cell(data_transaction="<b>", data_field="message").text == evil
    assert len(page.scripts) == 1  # only the page's own script


def test_page_refreshes_itself_and_its_csp_allows_exactly_its_script_and_style() -> None:
    html = render_page(build_view(snap()))
    assert html.count("<script>") == 1
    assert f"<script>{SCRIPT}</script>" in html
    assert f"<style>{STYLE}</style>" in html
    assert "/portal/status.json" in SCRIPT
    assert "setInterval(refresh, 2 * 1000)" in SCRIPT
    assert "innerHTML" not in SCRIPT
    assert '<noscript><meta http-equiv="refresh"' in html
    hashes = re.findall(r"'sha256-[A-Za-z0-9+/=]+'", CSP)
    assert len(hashes) == 2
    for text, h in zip((SCRIPT, STYLE), hashes, strict=True):
        digest = base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()
        assert h == f"'sha256-{digest}'"


# --- the app ---------------------------------------------------------------------------------


@dataclass
class FakeSource:
    snapshot_: Snapshot
    reads: int = 0

    async def snapshot(self) -> Snapshot:
        self.reads += 1
        return self.snapshot_


@dataclass
class FakeRole:
    node_name: str = "esc-ha-0"
    active: bool = True
    primary: str | None = "esc-ha-0"
    primary_url: str | None = None

    @property
    def serving(self) -> bool:  # (no lease here: two-node mode)
        return self.active


class FakeUsers:
    async def check(self, user: str, password: str, client: str | None = None) -> Verdict:
        return Verdict("admin") if (user, password) == ("admin", "s3cret") else Verdict()


@dataclass
class Client:
    """The app in-process over httpx's ASGI transport (what TestClient does, minus its threads
    and its deprecation warning)."""

    app: ASGIApp

    def get(self, path: str, auth: tuple[str, str] | None = None) -> httpx.Response:
        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="https://portal") as c:
                return await c.get(path, auth=auth)

        return asyncio.run(go())


@pytest.fixture
def role() -> FakeRole:
    return FakeRole()


@pytest.fixture
def client(role: FakeRole) -> Client:
    return Client(build_portal(FakeSource(snap()), role, FakeUsers()))


def test_credentials_are_required(client: Client) -> None:
    for path in ("/", "/portal/status.json", "/nothing"):
        r = client.get(path)
        assert r.status_code == 401, path
        assert r.headers["WWW-Authenticate"].startswith("Basic ")
        assert client.get(path, auth=("admin", "wrong")).status_code == 401


def test_page_and_json_with_credentials(client: Client) -> None:
    r = client.get("/", auth=("admin", "s3cret"))
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert r.headers["Content-Security-Policy"] == CSP
    assert r.headers["Cache-Control"] == "no-store"
    assert parse(r.text).cell(data_node="esc-ha-1", data_field="state").text == "BACKUP"
    j = client.get("/portal/status.json", auth=("admin", "s3cret"))
    assert j.status_code == 200
    view = j.json()
    assert view == build_view(snap())
    assert {n["node"]: n["state"] for n in view["nodes"]} == {
        "esc-ha-0": "MASTER",
        "esc-ha-1": "BACKUP",
    }
    assert view["deployments"][0]["vms"] == ["web-g1-0 (g1): ACTIVE", "web-g1-1 (g1): CREATING"]
    assert view["transactions"][0]["transaction"] == "dep-web-1"


def test_inactive_node_answers_503_naming_the_primary_before_credentials(
    client: Client, role: FakeRole
) -> None:
    role.active, role.node_name = False, "esc-ha-1"
    role.primary, role.primary_url = "esc-ha-0", "https://192.0.2.10:8443/v0"
    r = client.get("/portal/status.json")  # no credentials needed to learn where to go
    assert r.status_code == 503
    assert r.headers["Retry-After"] == "1"
    assert r.json() == {
        "detail": "this node (esc-ha-1) is not the primary",
        "primary": "esc-ha-0",
        "primary_url": "https://192.0.2.10:8443/v0",
    }
    page = client.get("/")
    assert page.status_code == 503
    assert page.headers["content-type"].startswith("text/html")
    assert "The primary is <span" in page.text and ">esc-ha-0</span>" in page.text
    assert '<meta http-equiv="refresh"' in page.text
    role.primary = "<i>x</i>"
    assert "<i>" not in client.get("/").text
    role.active = True
    assert client.get("/").status_code == 401


# --- config ----------------------------------------------------------------------------------


def test_portal_port_config() -> None:
    assert parse_config({}).manager.portal_port == 9001
    assert parse_config({"manager": {"portal_port": None}}).manager.portal_port is None
    with pytest.raises(ConfigError, match=r"portal_port: 8443 is already the https_port"):
        parse_config({"manager": {"portal_port": 8443}})
    with pytest.raises(ConfigError, match=r"manager\.portal_port"):
        parse_config({"manager": {"portal_port": 0}})


# --- the live source, against the agent's real local-API server (no database) ---------------


def test_live_source_reads_the_agent_and_survives_a_database_that_is_down(tmp_path: Path) -> None:
    calls: list[str] = []

    def agent(method: str, path: str, _body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        calls.append(f"{method} {path}")
        if path == "/status":
            st = agent_status()
            return 200, status_json(replace(st, peer=replace(st.peer, silent_for=math.inf)))
        history = [
            {"time": t.time, "from": t.from_state, "to": t.to_state, "reason": t.reason}
            for t in snap().history
        ]  # as agent/history.py writes them
        return 200, {"history": history}

    sock = tmp_path / "agent.sock"
    server = serve_unix(sock, agent)
    now = [T0]

    async def run() -> tuple[Snapshot, Snapshot, Snapshot]:
        pool = make_pool(f"host={tmp_path / 'nopg'} dbname=esc connect_timeout=1")
        await pool.open(wait=False)
        try:
            src = LiveSource("esc-ha-0", pool, sock, timeout=0.3, clock=lambda: now[0])
            first = await src.snapshot()
            again = await src.snapshot()  # within max_age_s: the same read
            now[0] += 1.5
            later = await src.snapshot()
        finally:
            await pool.close()
        return first, again, later

    try:
        first, again, later = asyncio.run(run())
    finally:
        server.shutdown()
        server.server_close()
    assert again is first
    assert later is not first and later.taken_at == T0 + 1.5
    assert calls == ["GET /status", "GET /history"] * 2
    assert first.agent is not None and first.agent.peer.silent_for == math.inf
    assert [h.to_state for h in first.history] == ["SWITCHING", "MASTER"]
    assert first.deployments is None and first.transactions is None
    assert len(first.errors) == 1 and first.errors[0].startswith("database unavailable")
    view = build_view(first)
    assert {n["node"]: n["state"] for n in view["nodes"]} == {
        "esc-ha-0": "MASTER",
        "esc-ha-1": "BACKUP",
    }


def test_live_source_without_an_agent(tmp_path: Path) -> None:
    async def run() -> Snapshot:
        pool = make_pool(f"host={tmp_path / 'nopg'} dbname=esc connect_timeout=1")
        await pool.open(wait=False)
        try:
            return await LiveSource(
                "esc-ha-0", pool, tmp_path / "none.sock", timeout=0.3
            ).snapshot()
        finally:
            await pool.close()

    s = asyncio.run(run())
    assert s.agent is None and s.history == []
    assert s.errors[0].startswith("agent of esc-ha-0 not answering: GET /status:")
    assert build_view(s)["nodes"][0]["state"] == "UNKNOWN"
