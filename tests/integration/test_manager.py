"""escmanager against a real, throwaway PostgreSQL 15 (unix socket only, no TCP listener).

The service runs in-process, each instance in its own thread and event loop with its real
listeners on 127.0.0.1 and its control socket, so "the old primary dies, a new one takes
over" is: stop instance A, start instance B (another node root) on the same database and the
same (fake) VIM, activate B.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlsplit

import httpx
import psycopg
import pytest
from labutil import deployment_body
from psycopg.conninfo import make_conninfo
from pydantic import BaseModel

from esc.config.schema import EscConfig, ManagerConfig, NodePaths
from esc.errors import ServiceError
from esc.manager.control import ManagerControl
from esc.manager.main import control_socket, serve
from esc.manager.models import DeploymentPage, TenantPage, TransactionPage
from esc.manager.users import add_user, list_users, set_password
from esc.manager.vim import FakeVim, Vim
from esc.manager.worker import WorkerTuning

pytestmark = pytest.mark.integration

PG_BIN = Path("/usr/lib/postgresql/15/bin")
USER, PASSWORD = "admin", "correct horse battery"
AUTH = (USER, PASSWORD)
FAST = WorkerTuning(poll_s=0.2, vim_retry_s=0.05, callback_backoff_s=0.05)
T = TypeVar("T")


def eventually(fn: Callable[[], T], timeout: float = 20.0, what: str = "") -> T:
    """Poll ``fn`` until truthy; fail with its last value after ``timeout`` (no fixed sleeps)."""
    deadline = time.monotonic() + timeout
    last = fn()
    while not last:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}: {last!r}")
        time.sleep(0.02)
        last = fn()
    return last


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# --- a throwaway PostgreSQL ---------------------------------------------------------------------


@dataclass
class Pg:
    base: Path
    data: Path
    sockdir: Path
    port: int

    def ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                "runuser",
                "-u",
                "postgres",
                "--",
                str(PG_BIN / "pg_ctl"),
                "-D",
                str(self.data),
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def conninfo(self, dbname: str = "esc") -> str:
        return make_conninfo(host=str(self.sockdir), port=self.port, dbname=dbname, user="postgres")


@pytest.fixture(scope="module")
def pg() -> Iterator[Pg]:
    if not (PG_BIN / "initdb").exists():
        pytest.skip("PostgreSQL 15 is not installed")
    base = Path(tempfile.mkdtemp(prefix="esc-mgr-"))
    base.chmod(0o755)  # postgres must traverse it
    sockdir = base / "pgsock"  # also holds the server log: postgres can write there
    sockdir.mkdir()
    shutil.chown(sockdir, "postgres", "postgres")
    data = base / "pgdata"
    data.mkdir(mode=0o700)
    shutil.chown(data, "postgres", "postgres")
    port = 56432
    while True:  # own port, in case another run holds 56432
        with socket.socket() as s:
            if (
                s.connect_ex(("127.0.0.1", port)) != 0
                and not (sockdir / f".s.PGSQL.{port}").exists()
            ):
                break
        port += 1
    pg = Pg(base, data, sockdir, port)
    opts = f"-p {port} -k {sockdir} -c listen_addresses='' -c fsync=off -c max_connections=200"
    try:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", str(PG_BIN / "initdb"), "-D", str(data),
             "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        log = sockdir / "pg.log"
        start = pg.ctl("-w", "-t", "60", "-o", opts, "-l", str(log), "start")
        assert start.returncode == 0, start.stderr + (log.read_text() if log.exists() else "")
        yield pg
    finally:
        pg.ctl("-w", "-m", "immediate", "stop")
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def database(pg: Pg) -> str:
    """A fresh ``esc`` database with one API user; returns its conninfo."""
    with psycopg.connect(pg.conninfo("postgres"), autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS esc WITH (FORCE)")
        conn.execute("CREATE DATABASE esc")
    with psycopg.connect(pg.conninfo()) as conn:
        add_user(conn, USER, PASSWORD)
    return pg.conninfo()


def sql(info: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(info) as conn:
        return conn.execute(query, params).fetchall()  # type: ignore[arg-type]


def sync_names(pg: Pg, value: str | None) -> None:
    """Name a synchronous standby that never connects (every commit then waits), or none."""
    with psycopg.connect(pg.conninfo("postgres"), autocommit=True) as conn:
        if value is None:
            conn.execute("ALTER SYSTEM RESET synchronous_standby_names")
        else:
            conn.execute(f"ALTER SYSTEM SET synchronous_standby_names = '{value}'")
        conn.execute("SELECT pg_reload_conf()")


def waiting_in_syncrep(pg: Pg) -> int:
    query = "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'"
    return int(sql(pg.conninfo("postgres"), query)[0][0])


# --- the service in a thread ----------------------------------------------------------------


async def no_names(host: str, port: int) -> list[Any]:
    """Callback names are not looked up here: a Callback schemathesis makes up (a name)
    is refused without a DNS query leaving the machine; the receivers are literals."""
    raise OSError(f"not resolved in the tests: {host}")


@dataclass
class Instance:
    """One esc-manager (one node) running in its own thread and event loop."""

    name: str
    root: Path
    conninfo: str
    vim: Vim
    tuning: WorkerTuning = FAST
    http_port: int = field(default_factory=free_port)
    https_port: int = field(default_factory=free_port)
    portal_port: int = field(default_factory=free_port)
    _loop: asyncio.AbstractEventLoop | None = None
    _stop: asyncio.Event | None = None
    _thread: threading.Thread | None = None
    _error: list[BaseException] = field(default_factory=list)

    @property
    def paths(self) -> NodePaths:
        return NodePaths(self.root)

    @property
    def url(self) -> str:
        """The API over HTTPS: plain HTTP (http_port) only redirects here."""
        return f"https://127.0.0.1:{self.https_port}"

    @property
    def control(self) -> ManagerControl:
        return ManagerControl(control_socket(self.paths), timeout=5.0)

    def start(self) -> Instance:
        cfg = EscConfig(
            node_name=self.name,
            manager=ManagerConfig(
                bind="127.0.0.1",  # type: ignore[arg-type]
                https_port=self.https_port,
                http_port=self.http_port,
                portal_port=self.portal_port,
                # the test's callback receivers listen on loopback, refused by default
                callback_networks=(ipaddress.ip_network("127.0.0.0/8"),),
            ),
        )
        ready = threading.Event()

        def run() -> None:
            async def main() -> None:
                self._loop = asyncio.get_running_loop()
                self._stop = asyncio.Event()
                ready.set()
                await serve(cfg, self.paths, self.vim, self._stop, conninfo=self.conninfo,
                            tuning=self.tuning, resolver=no_names)  # fmt: skip

            try:
                asyncio.run(main())
            except BaseException as exc:
                self._error.append(exc)
                ready.set()

        self._thread = threading.Thread(target=run, name=f"esc-manager-{self.name}", daemon=True)
        self._thread.start()
        assert ready.wait(10)
        eventually(lambda: self._error or self._status_ok(), 10, f"{self.name} control socket")
        assert not self._error, self._error
        return self

    def _status_ok(self) -> bool:
        try:
            self.control.status()
        except ServiceError:
            return False
        return True

    def stop(self) -> None:
        """The process dies: listeners close, worker tasks are cancelled mid-way."""
        if self._loop is not None and self._stop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(20)
            assert not self._thread.is_alive(), "service thread did not stop"
        self._thread = None

    def client(self, auth: tuple[str, str] | None = AUTH) -> httpx.Client:
        # the node's own self-signed certificate: what is checked is what it answers
        return httpx.Client(base_url=self.url, auth=auth, timeout=10.0, verify=False)


@pytest.fixture
def node_roots() -> Iterator[list[Path]]:
    base = Path(tempfile.mkdtemp(prefix="esc-mgr-nodes-"))
    try:
        yield [base / "esc-ha-0", base / "esc-ha-1"]
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def instances() -> Iterator[list[Instance]]:
    started: list[Instance] = []
    yield started
    for inst in started:
        inst.stop()


@pytest.fixture
def active(database: str, node_roots: list[Path], instances: list[Instance]) -> Instance:
    inst = Instance("esc-ha-0", node_roots[0], database, FakeVim()).start()
    instances.append(inst)
    inst.control.activate("esc-ha-0")
    return inst


# --- a callback receiver ----------------------------------------------------------------------


class Receiver:
    """Records every POST; answers 500 to the first ``fail_first`` of them."""

    def __init__(self, fail_first: int = 0) -> None:
        self.calls: list[dict[str, Any]] = []
        self.fail_left = fail_first
        lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length) or b"null")
                with lock:
                    failing = outer.fail_left > 0
                    outer.fail_left -= 1
                    outer.calls.append(
                        {"path": self.path, "headers": dict(self.headers), "body": body,
                         "answered": 500 if failing else 200}
                    )  # fmt: skip
                self.send_response(500 if failing else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


# --- tests -------------------------------------------------------------------------------------


def test_inactive_answers_503_naming_the_primary(
    database: str, node_roots: list[Path], instances: list[Instance]
) -> None:
    inst = Instance("esc-ha-1", node_roots[1], database, FakeVim()).start()
    instances.append(inst)
    status = inst.control.status()
    assert (status.active, status.healthy) == (False, True), status
    with inst.client() as c:
        r = c.get("/v0/tenants")
        assert r.status_code == 503
        assert r.json()["primary"] is None

        inst.control.deactivate("esc-ha-0", "https://192.0.2.254:8443")
        for method, path in (("GET", "/v0/tenants"), ("POST", "/v0/tenants"), ("GET", "/x")):
            r = c.request(method, path, json={"name": "t"})
            assert r.status_code == 503, (method, path)
            assert r.headers["Retry-After"] == "1"
            assert r.json()["primary"] == "esc-ha-0"
            assert r.json()["primary_url"] == "https://192.0.2.254:8443"
        assert "esc-ha-0" in inst.control.status().detail

        # activation is a message; deactivation again a message
        inst.control.activate("esc-ha-1")
        assert inst.control.status().active
        assert c.get("/v0/tenants").status_code == 200
        inst.control.deactivate(None, None)
        r = c.get("/v0/tenants")
        assert r.status_code == 503
        assert r.json()["primary"] is None


def test_activate_is_fast_and_control_rejects_bad_bodies(
    database: str, node_roots: list[Path], instances: list[Instance]
) -> None:
    inst = Instance("esc-ha-0", node_roots[0], database, FakeVim()).start()
    instances.append(inst)
    mode = os.stat(control_socket(inst.paths)).st_mode & 0o777
    assert mode == 0o600
    t0 = time.monotonic()
    inst.control.activate("esc-ha-0")  # first activation: runs the schema migrations too
    first_ms = (time.monotonic() - t0) * 1000
    inst.control.deactivate("esc-ha-1", None)
    t0 = time.monotonic()
    inst.control.activate("esc-ha-0")
    again_ms = (time.monotonic() - t0) * 1000
    print(f"activate: first {first_ms:.1f} ms, again {again_ms:.1f} ms")
    assert again_ms < 100
    assert inst.control.status().healthy
    sock = control_socket(inst.paths)
    transport = httpx.HTTPTransport(uds=str(sock))
    with httpx.Client(transport=transport, base_url="http://control") as c:
        r = c.post("/control/activate", json={"primary": ""})
        assert r.status_code == 422
        r = c.post("/control/deactivate", json={"primary": 3, "nonsense": 1})
        assert r.status_code == 422


def test_a_lease_the_agent_stops_renewing_stops_the_manager_at_its_end(
    database: str, node_roots: list[Path], instances: list[Instance]
) -> None:
    """Quorum mode's backstop: the agent passes its lease on every cycle; a manager it no
    longer renews (the agent frozen or stuck) stops serving at the lease's end by itself."""
    inst = Instance("esc-ha-0", node_roots[0], database, FakeVim()).start()
    instances.append(inst)
    with pytest.raises(ServiceError, match="lease is already over"):
        inst.control.activate("esc-ha-0", time.monotonic() - 0.1)
    inst.control.activate("esc-ha-0", time.monotonic() + 1.0)
    with inst.client() as c:
        assert c.post("/v0/tenants", json={"name": "leased"}).status_code == 202
        renewed_until = time.monotonic() + 2.5
        while time.monotonic() < renewed_until:  # renewed as the agent's cycles do
            inst.control.lease(time.monotonic() + 1.0)
            assert c.get("/v0/tenants").status_code == 200
            time.sleep(0.1)
        last = time.monotonic() + 0.5
        inst.control.lease(last)  # and then no more
        answers = eventually(
            lambda: (r := c.get("/v0/tenants")).status_code == 503 and (time.monotonic(), r),
            10,
            "503 once the lease is over",
        )
        assert answers[0] >= last and answers[1].json()["primary"] is None
        eventually(lambda: not inst.control.status().active, 10, "deactivated by itself")
        inst.control.activate("esc-ha-0")  # two-node mode: no bound
        assert c.get("/v0/tenants").status_code == 200
    sock = control_socket(inst.paths)
    with httpx.Client(transport=httpx.HTTPTransport(uds=str(sock)), base_url="http://c") as cc:
        for bad in ({}, {"until": "soon"}, {"until": -1}, {"until": "inf"}, {"until": 1, "x": 2}):
            r = cc.post("/control/lease", json=bad)
            assert r.status_code == 422, bad
        r = cc.post("/control/activate", json={"primary": "esc-ha-0", "until": "nan"})
        assert r.status_code == 422
    assert inst.control.status().active  # the refused bodies changed nothing


def test_tenant_lifecycle_and_transactions(active: Instance) -> None:
    with active.client(auth=None) as anon:
        r = anon.get("/v0/tenants")
        assert r.status_code == 401
        assert r.headers["WWW-Authenticate"].startswith("Basic")
        assert anon.get("/openapi.json").status_code == 401
        assert anon.post("/v0/tenants", content=b"{not json").status_code == 401
    with active.client(auth=(USER, "wrong password")) as bad:
        assert bad.get("/v0/tenants").status_code == 401

    with active.client() as c:
        r = c.post("/v0/tenants", json={"name": "acme", "description": "first"})
        assert r.status_code == 202, r.text
        txid = r.headers["ESC-Transaction-Id"]
        body = r.json()
        assert body["id"] == txid
        assert body["operation"] == "CREATE_TENANT"
        assert body["state"] == "SUCCESS"
        assert body["resource"]["name"] == "acme"

        assert c.get("/v0/tenants/acme").json()["description"] == "first"
        assert [t["name"] for t in c.get("/v0/tenants").json()["tenants"]] == ["acme"]
        tx = c.get(f"/v0/transactions/{txid}").json()
        assert (tx["id"], tx["state"], tx["resource_id"]) == (txid, "SUCCESS", "acme")
        listed = c.get("/v0/transactions").json()["transactions"]
        assert [t["id"] for t in listed] == [txid]
        assert c.get("/v0/transactions", params={"state": "FAILED"}).json()["transactions"] == []

        r = c.post("/v0/tenants", json={"name": "acme"})
        assert r.status_code == 409
        assert r.json()["field"] == "name"
        assert c.get("/v0/tenants/nope").status_code == 404
        assert c.get("/v0/transactions/nope").status_code == 404

        r = c.delete("/v0/tenants/acme")
        assert r.status_code == 202
        assert r.json()["operation"] == "DELETE_TENANT"
        assert c.get("/v0/tenants/acme").status_code == 404
        assert c.delete("/v0/tenants/acme").status_code == 404

        # accept latency of a tenant create on loopback, one client
        times = []
        for i in range(300):
            t0 = time.perf_counter()
            r = c.post("/v0/tenants", json={"name": f"t{i}"})
            times.append((time.perf_counter() - t0) * 1000)
            assert r.status_code == 202
        times.sort()
        p50, p99 = statistics.median(times), times[int(len(times) * 0.99) - 1]
        print(
            f"tenant create accept latency (1 client, plain HTTP):"
            f" p50 {p50:.2f} ms p99 {p99:.2f} ms"
        )
        assert p99 < 100


def test_same_transaction_id_is_executed_once(active: Instance) -> None:
    info = active.conninfo
    with active.client() as c:
        first = c.post("/v0/tenants", json={"name": "t1"}, headers={"ESC-Transaction-Id": "tx-1"})
        assert first.status_code == 202
        assert first.headers["ESC-Transaction-Id"] == "tx-1"
        again = c.post("/v0/tenants", json={"name": "t1"}, headers={"ESC-Transaction-Id": "tx-1"})
        assert again.status_code == 202
        assert again.json() == first.json()
        assert again.headers["ESC-Transaction-Replayed"] == "true"
        # Idempotency-Key is the same id space
        same = c.post("/v0/tenants", json={"name": "t1"}, headers={"Idempotency-Key": "tx-1"})
        assert same.json() == first.json()

        diff = c.post(
            "/v0/tenants",
            json={"name": "t1", "description": "other"},
            headers={"ESC-Transaction-Id": "tx-1"},
        )
        assert diff.status_code == 409
        assert diff.json()["field"] == "description"
        assert "description" in diff.json()["detail"]
        other_path = c.delete("/v0/tenants/t1", headers={"ESC-Transaction-Id": "tx-1"})
        assert other_path.status_code == 409
        assert other_path.json()["field"] == "request"

        both = c.post(
            "/v0/tenants",
            json={"name": "t2"},
            headers={"ESC-Transaction-Id": "a", "Idempotency-Key": "b"},
        )
        assert both.status_code == 422

    # 16 concurrent clients, one id: one execution, every answer the original
    def post(_: int) -> httpx.Response:
        with active.client() as c:
            return c.post(
                "/v0/tenants", json={"name": "race"}, headers={"Idempotency-Key": "race-1"}
            )

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(post, range(16)))
    assert {a.status_code for a in answers} == {202}
    assert len({json.dumps(a.json(), sort_keys=True) for a in answers}) == 1
    assert sql(info, "SELECT count(*) FROM tenants WHERE name = 'race'") == [(1,)]
    assert sql(info, "SELECT count(*) FROM transactions WHERE id IN ('tx-1', 'race-1')") == [(2,)]
    assert sql(info, "SELECT count(*) FROM tenants") == [(2,)]


def test_a_replay_waits_for_the_synchronous_standby_like_a_write(active: Instance, pg: Pg) -> None:
    """The original may be committed on this node only (its commit waited for the standby
    and PostgreSQL restarted, or the client gave up): a replay must not acknowledge it before
    the standby has it. With a synchronous standby configured that never connects, a replay
    waits in SyncRep like a write, and answers once the wait is lifted."""
    headers = {"ESC-Transaction-Id": "sync-1"}
    with active.client() as c:
        first = c.post("/v0/tenants", json={"name": "s1"}, headers=headers)
        assert first.status_code == 202

    sync_names(pg, "ghost")
    try:
        with ThreadPoolExecutor(1) as pool, active.client() as c:
            c.timeout = httpx.Timeout(60.0)
            answer = pool.submit(c.post, "/v0/tenants", json={"name": "s1"}, headers=headers)
            waiting = "the replay's commit waiting for the standby"
            eventually(lambda: waiting_in_syncrep(pg), 20, waiting)
            assert not answer.done()
            sync_names(pg, None)
            again = answer.result(timeout=30)
    finally:
        sync_names(pg, None)
    assert again.status_code == 202
    assert again.headers["ESC-Transaction-Replayed"] == "true"
    assert again.json() == first.json()


def test_the_health_check_answers_while_every_connection_waits_for_the_standby(
    active: Instance, pg: Pg
) -> None:
    """The synchronous standby lost: every northbound commit waits (until the agent's grace
    runs out) holding a connection of the pool. The health check has its own connection: it
    says healthy, so the agent does not close the gate before its grace can run out (found by
    test_heal.py: the pool full, the check timed out three times, the old primary went FAULT
    and stayed synchronous with a standby cut off)."""

    writers = 24  # more than the pool's 20 connections

    def post(i: int) -> int:
        with active.client() as c:
            c.timeout = httpx.Timeout(60.0)
            return c.post("/v0/tenants", json={"name": f"w{i}"}).status_code

    sync_names(pg, "ghost")
    try:
        with ThreadPoolExecutor(writers) as pool:
            answers = [pool.submit(post, i) for i in range(writers)]
            eventually(lambda: waiting_in_syncrep(pg) >= 20, 30, "the pool's connections waiting")
            for _ in range(3):  # the agent's three failures in a row would close the gate
                st = active.control.status()
                assert st.healthy and st.active, st
            assert waiting_in_syncrep(pg) >= 20  # still waiting when the checks answered
            sync_names(pg, None)
            codes = [a.result(timeout=60) for a in answers]
    finally:
        sync_names(pg, None)
    assert all(c in (202, 503) for c in codes), codes  # 503: no connection within 3 s
    assert codes.count(202) >= 20, codes


def test_activation_answers_in_time_after_the_database_broke_every_connection(
    active: Instance, pg: Pg
) -> None:
    """A standby rewound or restarted just before it is promoted: every connection its pool
    holds is broken. psycopg_pool sleeps (1 s, with its backoff) after each broken connection
    a checkout meets, so activation took one second per pooled connection (2 to 15 s in
    test_heal.py, the agent's call timing out every 2 s meanwhile). Activation first checks
    the whole pool at once; the agent's own 2 s timeout is what it must answer within."""
    admin = pg.conninfo("postgres")

    def post(i: int) -> int:
        with active.client() as c:
            return c.post("/v0/tenants", json={"name": f"grow{i}"}).status_code

    with ThreadPoolExecutor(16) as pool:  # grow the pool to many connections
        assert set(pool.map(post, range(64))) == {202}
    control = ManagerControl(control_socket(active.paths), timeout=2.0)  # as the agent's
    control.deactivate("esc-ha-1", None)
    killed = sql(
        admin,
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE datname = 'esc' AND pid <> pg_backend_pid()",
    )[0][0]
    assert killed >= 5, killed  # what a restart does to every pooled connection
    control.activate("esc-ha-0")  # raises ServiceError (timed out) when too slow
    assert control.status().active
    with active.client() as c:
        assert c.post("/v0/tenants", json={"name": "after"}).status_code == 202


@pytest.mark.parametrize(
    ("path", "body", "headers", "field"),
    [
        ("/v0/tenants", {}, {}, "name"),
        ("/v0/tenants", {"name": "bad name"}, {}, "name"),
        ("/v0/tenants", {"name": "ok", "colour": "red"}, {}, "colour"),
        ("/v0/tenants", {"name": "ok", "description": "a\nb"}, {}, "description"),
        ("/v0/tenants", {"name": "ok"}, {"ESC-Transaction-Id": "has space"}, "ESC-Transaction-Id"),
        ("/v0/tenants", {"name": "ok"}, {"Idempotency-Key": "x" * 129}, "Idempotency-Key"),
        ("/v0/tenants", {"name": "ok"}, {"Callback": "ftp://192.0.2.1/x"}, "Callback"),
        ("/v0/tenants", {"name": "ok"}, {"Callback": "not a url"}, "Callback"),
        ("/v0/tenants", {"name": "ok"}, {"Callback": "http://169.254.169.254/x"}, "Callback"),
        ("/v0/deployments", deployment_body("t", "d", count=True), {}, "vm_groups.0.count"),
        ("/v0/deployments", {"tenant": "t", "name": "d"}, {}, "vm_groups"),
        ("/v0/deployments", {**deployment_body("t", "d"), "vm_groups": []}, {}, "vm_groups"),
        ("/v0/deployments", deployment_body("t", "d", count=0), {}, "vm_groups.0.count"),
        ("/v0/deployments", deployment_body("t", "d", count=51), {}, "vm_groups.0.count"),
        ("/v0/deployments", deployment_body("nosuch", "d"), {}, "tenant"),
    ],
)
def test_bad_requests_name_the_field(
    active: Instance, path: str, body: dict[str, Any], headers: dict[str, str], field: str
) -> None:
    with active.client() as c:
        c.post("/v0/tenants", json={"name": "t"})
        r = c.post(path, json=body, headers=headers)
        assert 400 <= r.status_code < 500, r.text
        assert r.json()["field"] == field, r.json()
        assert field in r.json()["detail"]


def test_invalid_json_and_bad_kpi(active: Instance) -> None:
    with active.client() as c:
        r = c.post("/v0/tenants", content=b"{nope", headers={"Content-Type": "application/json"})
        assert r.status_code == 422
        assert r.json()["field"] == "body"
        body = deployment_body("t", "d")
        body["vm_groups"][0]["kpi"] = {"type": "TCPPing", "poll_interval_s": 3}
        r = c.post("/v0/deployments", json=body)
        assert r.status_code == 422
        assert r.json()["field"].startswith("vm_groups.0.kpi"), r.json()
        assert "port" in r.json()["detail"]


def test_portal_reads_the_database_and_says_the_agent_is_missing(active: Instance) -> None:
    """The portal's live source on a real database. No agent runs here: the page says so."""
    with active.client() as c:
        assert c.post("/v0/tenants", json={"name": "acme"}).status_code == 202
        r = c.post("/v0/deployments", json=deployment_body("acme", "web", count=2))
        assert r.status_code == 202, r.text
        dep_id = r.json()["resource_id"]
    with httpx.Client(
        base_url=f"https://127.0.0.1:{active.portal_port}", verify=False, timeout=10
    ) as p:
        assert p.get("/").status_code == 401
        assert p.get("/portal/status.json", auth=(USER, "wrong")).status_code == 401

        def shown() -> dict[str, Any] | None:
            r = p.get("/portal/status.json", auth=AUTH)
            assert r.status_code == 200, r.text
            view: dict[str, Any] = r.json()
            return view if any(d["deployment"] == dep_id for d in view["deployments"]) else None

        view = eventually(shown, 10, "the deployment on the portal")  # reads are cached 1 s
        (dep,) = [d for d in view["deployments"] if d["deployment"] == dep_id]
        assert dep["tenant"] == "acme" and len(dep["vms"]) == 2
        assert {t["operation"] for t in view["transactions"]} >= {
            "CREATE_TENANT",
            "CREATE_DEPLOYMENT",
        }
        assert [(n["node"], n["state"]) for n in view["nodes"]] == [("esc-ha-0", "UNKNOWN")]
        assert any(e.startswith("agent of esc-ha-0 not answering") for e in view["errors"])
        page = p.get("/", auth=AUTH)
        assert page.status_code == 200
        assert f'data-deployment="{dep_id}"' in page.text

        active.control.deactivate("esc-ha-1", None)
        r = p.get("/portal/status.json")
        assert r.status_code == 503
        assert r.json()["primary"] == "esc-ha-1"


def test_https_listener_and_openapi(active: Instance) -> None:
    with httpx.Client(verify=False, auth=AUTH, timeout=10) as c:
        r = c.get(f"https://127.0.0.1:{active.https_port}/openapi.json")
        assert r.status_code == 200
        doc = r.json()
        assert "/v0/deployments" in doc["paths"]
        assert doc["components"]["securitySchemes"]["basic"]["scheme"] == "basic"
        assert r.headers["strict-transport-security"] == "max-age=31536000"
        # plain HTTP answers a redirect and nothing else, to a valid Host only
        plain = f"http://127.0.0.1:{active.http_port}"
        r = c.get(f"{plain}/v0/tenants?limit=1", follow_redirects=False)
        assert r.status_code == 308
        assert r.headers["location"] == f"https://127.0.0.1:{active.https_port}/v0/tenants?limit=1"
        assert "strict-transport-security" not in r.headers
        r = c.get(f"{plain}/v0/tenants", headers={"Host": "evil@example"})
        assert r.status_code == 308
        assert r.headers["location"] == f"https://127.0.0.1:{active.https_port}/v0/tenants"
    cert = active.paths.etc_dir / "manager.crt"
    key = active.paths.etc_dir / "manager.key"
    assert cert.exists()
    assert os.stat(key).st_mode & 0o077 == 0


def test_password_change_applies(active: Instance) -> None:
    with psycopg.connect(active.conninfo) as conn:
        set_password(conn, USER, "a new password")
    with active.client(auth=(USER, "a new password")) as c:
        eventually(lambda: c.get("/v0/tenants").status_code == 200, 10, "new password works")
    with active.client() as c:
        eventually(lambda: c.get("/v0/tenants").status_code == 401, 10, "old password refused")


def test_roles(active: Instance) -> None:
    """A read-only user reads but may not write (403 naming the role); the admin writes."""
    with psycopg.connect(active.conninfo) as conn:
        add_user(conn, "viewer", "viewer password", "read-only")
        assert list_users(conn) == [(USER, "admin"), ("viewer", "read-only")]
    with active.client(auth=("viewer", "viewer password")) as c:
        assert c.get("/v0/tenants").status_code == 200
        r = c.post("/v0/tenants", json={"name": "ro"})
        assert r.status_code == 403 and r.json()["role"] == "read-only", r.text
    with active.client() as c:
        assert c.post("/v0/tenants", json={"name": "rw"}).status_code == 202
        assert [t["name"] for t in c.get("/v0/tenants").json()["tenants"]] == ["rw"]


def test_deployment_resumes_on_new_primary_without_duplicate_vms(
    database: str, node_roots: list[Path], instances: list[Instance], receiver: Receiver
) -> None:
    vim = FakeVim(delay_s=0.15)
    old = Instance("esc-ha-0", node_roots[0], database, vim).start()
    instances.append(old)
    old.control.activate("esc-ha-0")
    with old.client() as c:
        assert c.post("/v0/tenants", json={"name": "acme"}).status_code == 202
        r = c.post(
            "/v0/deployments",
            json=deployment_body("acme", "web", count=8),
            headers={"Callback": receiver.url, "ESC-Transaction-Id": "dep-web-1"},
        )
        assert r.status_code == 202, r.text
        assert r.json()["state"] == "PENDING"
        dep_id = r.json()["resource_id"]
        assert len(r.json()["resource"]["vms"]) == 8

    eventually(lambda: sum(vim.creations.values()) >= 3, 20, "3 VMs created by the old primary")
    old.stop()  # the old primary dies half-way
    created_before = sum(vim.creations.values())
    assert created_before < 8
    state = sql(database, "SELECT state FROM transactions WHERE id = 'dep-web-1'")
    assert state == [("RUNNING",)]

    new = Instance("esc-ha-1", node_roots[1], database, vim).start()
    instances.append(new)
    with new.client() as c:
        # a client retrying against the standby is told where to go...
        assert c.get(f"/v0/deployments/{dep_id}").status_code == 503
        new.control.activate("esc-ha-1")
        # ...and after the failover its retry is answered with the original transaction
        retry = c.post(
            "/v0/deployments",
            json=deployment_body("acme", "web", count=8),
            headers={"Callback": receiver.url, "ESC-Transaction-Id": "dep-web-1"},
        )
        assert retry.status_code == 202
        assert retry.json()["resource_id"] == dep_id

        def done() -> dict[str, Any] | None:
            tx = c.get("/v0/transactions/dep-web-1").json()
            return tx if tx["state"] in ("SUCCESS", "FAILED") else None

        tx = eventually(done, 30, "deployment finished on the new primary")
        assert tx["state"] == "SUCCESS", tx
        dep = c.get(f"/v0/deployments/{dep_id}").json()
        assert dep["state"] == "DEPLOYED"
        assert {v["state"] for v in dep["vms"]} == {"ACTIVE"}

    assert len(vim.names()) == 8
    assert max(vim.creations.values()) == 1, vim.creations  # no VM created twice
    assert sql(database, "SELECT count(*) FROM deployments") == [(1,)]

    eventually(lambda: receiver.calls, 20, "callback")
    for call in receiver.calls:
        h = {k.lower(): v for k, v in call["headers"].items()}
        assert h["esc-transaction-id"] == "dep-web-1"
        assert h["esc-status-code"] == "200"
        assert "deployed" in h["esc-status-message"]
        assert call["body"]["id"] == dep_id
        assert call["body"]["state"] == "DEPLOYED"
    cb = sql(database, "SELECT state, attempts FROM callbacks WHERE transaction_id = 'dep-web-1'")
    eventually(lambda: sql(database, "SELECT state FROM callbacks") == [("DELIVERED",)], 10, "")
    assert cb[0][1] >= 1


def test_deactivate_pauses_the_worker_and_activate_resumes(
    database: str, node_roots: list[Path], instances: list[Instance], receiver: Receiver
) -> None:
    vim = FakeVim(delay_s=0.1)
    inst = Instance("esc-ha-0", node_roots[0], database, vim).start()
    instances.append(inst)
    inst.control.activate("esc-ha-0")
    with inst.client() as c:
        c.post("/v0/tenants", json={"name": "acme"})
        r = c.post(
            "/v0/deployments",
            json=deployment_body("acme", "db", count=6),
            headers={"Callback": receiver.url},
        )
        txid = r.headers["ESC-Transaction-Id"]
        dep_id = r.json()["resource_id"]
        eventually(lambda: sum(vim.creations.values()) >= 2, 20, "2 VMs")
        inst.control.deactivate("esc-ha-1", None)
        paused_at = sum(vim.creations.values())
        assert c.get(f"/v0/transactions/{txid}").status_code == 503
        # nothing happens while inactive: the worker is stopped (bounded look, not a sleep)
        with contextlib.suppress(AssertionError):
            eventually(lambda: sum(vim.creations.values()) > paused_at + 1, 0.5, "")
        assert sum(vim.creations.values()) <= paused_at + 1
        inst.control.activate("esc-ha-0")
        eventually(
            lambda: c.get(f"/v0/transactions/{txid}").json()["state"] == "SUCCESS", 20, "done"
        )
        assert max(vim.creations.values()) == 1

        # delete: the VMs go away, the callback reports the deletion
        r = c.delete(f"/v0/deployments/{dep_id}", headers={"Callback": receiver.url})
        assert r.status_code == 202
        del_tx = r.headers["ESC-Transaction-Id"]
        eventually(
            lambda: c.get(f"/v0/transactions/{del_tx}").json()["state"] == "SUCCESS", 20, "deleted"
        )
        assert vim.names() == set()
        assert c.get(f"/v0/deployments/{dep_id}").status_code == 404
        ids = eventually(
            lambda: (
                {x["headers"]["ESC-Transaction-Id"] for x in receiver.calls} >= {txid, del_tx}
                and {x["headers"]["ESC-Transaction-Id"] for x in receiver.calls}
            ),
            10,
            "both callbacks",
        )
        assert ids == {txid, del_tx}
        assert c.delete("/v0/tenants/acme").status_code == 202


def test_failed_vm_fails_the_transaction(active: Instance) -> None:
    vim = active.vim
    assert isinstance(vim, FakeVim)
    vim.fail_names = frozenset({"bad_g1_2"})
    with active.client() as c:
        c.post("/v0/tenants", json={"name": "t"})
        r = c.post("/v0/deployments", json=deployment_body("t", "bad", count=3))
        txid = r.headers["ESC-Transaction-Id"]
        tx = eventually(
            lambda: (
                (t := c.get(f"/v0/transactions/{txid}").json())["state"] != "PENDING"
                and t["state"] != "RUNNING"
                and t
            ),
            20,
            "transaction end",
        )
        assert tx["state"] == "FAILED"
        assert tx["status_code"] == 500
        assert "bad_g1_2" in tx["message"]
        assert c.get(f"/v0/deployments/{tx['resource_id']}").json()["state"] == "FAILED"


def test_callback_retried_until_delivered(active: Instance) -> None:
    receiver = Receiver(fail_first=2)
    try:
        with active.client() as c:
            r = c.post("/v0/tenants", json={"name": "cb"}, headers={"Callback": receiver.url})
            txid = r.headers["ESC-Transaction-Id"]
        eventually(lambda: any(x["answered"] == 200 for x in receiver.calls), 20, "delivery")
        assert len(receiver.calls) == 3
        assert {x["headers"]["ESC-Transaction-Id"] for x in receiver.calls} == {txid}
        assert all(x["body"]["name"] == "cb" for x in receiver.calls)
        rows = eventually(
            lambda: sql(active.conninfo, "SELECT state, attempts FROM callbacks"), 10, "row"
        )
        eventually(
            lambda: (
                sql(active.conninfo, "SELECT state, attempts FROM callbacks") == [("DELIVERED", 3)]
            ),
            10,
            f"delivered state (was {rows})",
        )
        # the address checked when the request came is stored: the worker connects there
        assert sql(active.conninfo, "SELECT address FROM callbacks") == [("127.0.0.1",)]
    finally:
        receiver.close()


def test_survives_database_restart(active: Instance, pg: Pg) -> None:
    with active.client() as c:
        assert c.post("/v0/tenants", json={"name": "before"}).status_code == 202
        # -l: without a log file the server would inherit our capture pipe and never let go
        r = pg.ctl("-w", "-m", "fast", "-l", str(pg.sockdir / "pg.log"), "restart")
        assert r.returncode == 0, r.stderr
        eventually(
            lambda: c.post("/v0/tenants", json={"name": "after"}).status_code == 202,
            20,
            "writes after the database restart",
        )
        assert active.control.status().healthy
    names = {r[0] for r in sql(active.conninfo, "SELECT name FROM tenants")}
    assert names == {"before", "after"}


def test_health_reports_a_dead_database(
    database: str, node_roots: list[Path], instances: list[Instance]
) -> None:
    bogus = make_conninfo(host=str(node_roots[0]), port=1, dbname="esc", user="postgres")
    inst = Instance("esc-ha-0", node_roots[0], bogus, FakeVim()).start()
    instances.append(inst)
    st = inst.control.status()
    assert (st.active, st.healthy) == (False, False)
    assert "unreachable" in st.detail
    with pytest.raises(ServiceError, match="database"):
        inst.control.activate("esc-ha-0")
    assert not inst.control.status().active


# --- pagination -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Listing:
    """One list route: its answer's key and model, the field naming a row, an optional filter
    (name, the value that selects a subset of the seeded rows) and its default limit."""

    path: str
    key: str
    model: type[BaseModel]
    ident: str
    filter: tuple[str, str] | None
    default_limit: int


LISTINGS = {
    "tenants": Listing("/v0/tenants", "tenants", TenantPage, "name", None, 1000),
    "deployments": Listing(
        "/v0/deployments", "deployments", DeploymentPage, "id", ("tenant", "beta"), 1000
    ),
    "transactions": Listing(
        "/v0/transactions", "transactions", TransactionPage, "id", ("state", "FAILED"), 100
    ),
}


def seed_tenants(info: str, n: int) -> None:
    """``n`` tenants t00001..., inserted in random order (not the list's order)."""
    sql(
        info,
        "INSERT INTO tenants (name, description) SELECT format('t%%s', lpad(i::text, 5, '0')),"
        " format('tenant %%s', i) FROM generate_series(1, %s) i ORDER BY random() RETURNING 1",
        n,
    )


def seed_deployments(info: str, n: int) -> None:
    """``n`` deployments of tenants acme and beta (every third), four to a created_at (the id
    breaks the tie), a microsecond apart, inserted in random order."""
    sql(info, "INSERT INTO tenants (name) VALUES ('acme'), ('beta') RETURNING 1")
    sql(
        info,
        "INSERT INTO deployments (id, tenant, name, spec, state, created_at)"
        " SELECT gen_random_uuid(), t, format('d%%s', i),"
        "   jsonb_build_object('tenant', t, 'name', format('d%%s', i), 'vm_groups', '[]'::jsonb),"
        "   'DEPLOYED', timestamptz '2024-01-01 00:00:00+00' + (i / 4) * interval '1 microsecond'"
        " FROM generate_series(1, %s) i,"
        "   LATERAL (SELECT CASE WHEN i %% 3 = 0 THEN 'beta' ELSE 'acme' END AS t) x"
        " ORDER BY random() RETURNING 1",
        n,
    )


def seed_transactions(info: str, n: int) -> None:
    """``n`` finished transactions tx-1... with seq 10, 20, ... (gaps, for rows that took a seq
    early and committed late), every fourth FAILED, inserted in random order."""
    sql(
        info,
        "INSERT INTO transactions (id, seq, operation, resource_type, resource_id, request,"
        " state, status_code, response, created_at)"
        " SELECT format('tx-%%s', i), i * 10, 'CREATE_TENANT', 'tenant', format('t%%s', i), '{}',"
        "   CASE WHEN i %% 4 = 0 THEN 'FAILED' ELSE 'SUCCESS' END, 200, '{}', now()"
        " FROM generate_series(1, %s) i ORDER BY random() RETURNING 1",
        n,
    )
    sql(info, "SELECT setval('transactions_seq_seq', %s)", max(n * 10, 1))


def expected_ids(info: str, name: str, filtered: bool = False) -> list[str]:
    """The rows of a list in its documented order, sorted here in Python (not by the API's
    SQL): tenants by name, deployments by (created_at, id), transactions by seq descending."""
    if name == "tenants":
        return sorted(r[0] for r in sql(info, "SELECT name FROM tenants"))
    if name == "deployments":
        rows = sql(info, "SELECT id, created_at, tenant FROM deployments")
        rows = [r for r in rows if not filtered or r[2] == "beta"]
        return [str(r[0]) for r in sorted(rows, key=lambda r: (r[1], r[0]))]
    rows = sql(info, "SELECT id, seq, state FROM transactions")
    rows = [r for r in rows if not filtered or r[2] == "FAILED"]
    return [r[0] for r in sorted(rows, key=lambda r: -r[1])]


def read_page(
    c: httpx.Client, listing: Listing, url: str, params: dict[str, Any] | None = None
) -> tuple[list[str], str | None]:
    """One page: its rows' ids and its next link, the answer checked against the OpenAPI model."""
    r = c.get(url, params=params)
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {listing.key, "next"}, body.keys()
    listing.model.model_validate(body)
    return [item[listing.ident] for item in body[listing.key]], body["next"]


def walk(c: httpx.Client, listing: Listing, params: dict[str, Any]) -> tuple[list[str], int]:
    """Every page from the first, following ``next`` as is; (the ids in order, pages read)."""
    limit = int(params.get("limit", listing.default_limit))
    same = [(k, str(v)) for k, v in params.items() if k != "limit"] + [("limit", str(limit))]
    ids, pages = [], 0
    url: str | None = listing.path
    while url is not None:
        page, url = read_page(c, listing, url, params if pages == 0 else None)
        pages += 1
        assert len(page) <= limit
        ids += page
        if url is not None:
            assert len(page) == limit, "only a full page has a next link"
            parts = urlsplit(url)
            assert (parts.scheme, parts.netloc, parts.path) == ("", "", listing.path), url
            query = parse_qsl(parts.query)
            assert [q for q in query if q[0] != "after"] == same, url
            assert [q[0] for q in query].count("after") == 1, url
        assert pages <= 10_001, "the walk does not end"
    return ids, pages


SEED = {"tenants": seed_tenants, "deployments": seed_deployments, "transactions": seed_transactions}


@pytest.mark.parametrize("name", list(LISTINGS))
@pytest.mark.parametrize(("n", "limit"), [(0, 5), (1, 5), (5, 5), (6, 5), (10_000, 1000)])
def test_every_page_of_a_list_every_row_once_in_order(
    active: Instance, name: str, n: int, limit: int
) -> None:
    listing, info = LISTINGS[name], active.conninfo
    SEED[name](info, n)
    assert len(expected_ids(info, name)) == n
    with active.client() as c:
        ids, pages = walk(c, listing, {"limit": limit})
        assert ids == expected_ids(info, name)
        assert pages == max(1, -(-n // limit))
        if listing.filter is not None:
            key, value = listing.filter
            ids, _ = walk(c, listing, {key: value, "limit": limit})
            assert ids == expected_ids(info, name, filtered=True)
            assert (len(ids) > 0) == (n >= 3)
        if n == 10_000:  # the default limit, not in the query: the next links carry it
            ids, pages = walk(c, listing, {})
            assert ids == expected_ids(info, name)
            assert pages == n // listing.default_limit


def test_tenant_pages_with_writes_between_reads(active: Instance) -> None:
    """Between two page reads: tenants created behind the cursor (never shown), ahead of it
    (shown once, in place), and the cursor's own row deleted; the walk goes on unshaken."""
    listing, info = LISTINGS["tenants"], active.conninfo
    seed_tenants(info, 20)
    before = expected_ids(info, "tenants")
    with active.client() as c:
        page1, url = read_page(c, listing, "/v0/tenants", {"limit": 5})
        assert url is not None
        page2, url = read_page(c, listing, url)
        assert page1 + page2 == before[:10] and url is not None
        for new in ("t00005x", "t00012x", "t00099", "a"):
            assert c.post("/v0/tenants", json={"name": new}).status_code == 202
        assert c.delete(f"/v0/tenants/{page2[-1]}").status_code == 202  # the cursor's row
        rest: list[str] = []
        while url is not None:
            page, url = read_page(c, listing, url)
            rest += page
    seen = page1 + page2 + rest
    assert seen == sorted([*before, "t00012x", "t00099"])
    assert len(seen) == len(set(seen))


def test_deployment_pages_with_writes_between_reads(active: Instance) -> None:
    """Deployments ordered by (created_at, id): rows with the cursor's created_at on either
    side of its id, one that committed late with an old created_at, a new one through the API,
    and the cursor's row deleted, all between two page reads."""
    listing, info = LISTINGS["deployments"], active.conninfo
    seed_deployments(info, 20)
    keys = {str(r[0]): (r[1], r[0]) for r in sql(info, "SELECT id, created_at FROM deployments")}
    before = expected_ids(info, "deployments")
    with active.client() as c:
        page1, url = read_page(c, listing, "/v0/deployments", {"limit": 5})
        assert url is not None
        page2, url = read_page(c, listing, url)
        assert page1 + page2 == before[:10] and url is not None
        at, cursor_id = keys[page2[-1]]
        behind, ahead = uuid.UUID(int=cursor_id.int - 1), uuid.UUID(int=cursor_id.int + 1)
        assert not {str(behind), str(ahead)} & set(keys)
        for dep_id, created in (
            (behind, at),  # same created_at, smaller id: behind the cursor
            (ahead, at),  # same created_at, larger id: ahead of it
            (uuid.uuid4(), datetime(2023, 1, 1, tzinfo=UTC)),  # committed late, long ago
        ):
            sql(
                info,
                "INSERT INTO deployments (id, tenant, name, spec, state, created_at)"
                " VALUES (%s, 'acme', %s, '{\"vm_groups\": []}', 'DEPLOYED', %s) RETURNING 1",
                dep_id,
                f"late-{dep_id}",
                created,
            )
        r = c.post("/v0/deployments", json=deployment_body("acme", "fresh", count=2))
        assert r.status_code == 202, r.text
        fresh = r.json()["resource_id"]
        sql(info, "DELETE FROM deployments WHERE id = %s RETURNING 1", cursor_id)
        rest: list[str] = []
        while url is not None:
            page, url = read_page(c, listing, url)
            rest += page
    seen = page1 + page2 + rest
    assert len(seen) == len(set(seen))
    assert seen == [*before[:10], *sorted([*before[10:], str(ahead)], key=keys_of(info)), fresh]


def keys_of(info: str) -> Callable[[str], tuple[datetime, uuid.UUID]]:
    rows = sql(info, "SELECT id, created_at FROM deployments")
    found = {str(r[0]): (r[1], r[0]) for r in rows}
    return lambda dep_id: found[dep_id]


def test_transaction_pages_with_writes_between_reads(active: Instance) -> None:
    """Transactions newest first by seq: a new one through the API (behind the cursor, never
    shown) and two that took their seq early and committed late, one on either side."""
    listing, info = LISTINGS["transactions"], active.conninfo
    seed_transactions(info, 20)  # seq 10..200; page 2 ends at tx-11, seq 110
    before = expected_ids(info, "transactions")
    with active.client() as c:
        page1, url = read_page(c, listing, "/v0/transactions", {"limit": 5})
        assert url is not None
        page2, url = read_page(c, listing, url)
        assert page1 + page2 == before[:10] and page2[-1] == "tx-11" and url is not None
        assert c.post("/v0/tenants", json={"name": "newer"}).status_code == 202
        for txid, seq in (("late-behind", 155), ("late-ahead", 105)):
            sql(
                info,
                "INSERT INTO transactions (id, seq, operation, resource_type, resource_id,"
                " request, state, response, created_at)"
                " VALUES (%s, %s, 'CREATE_TENANT', 'tenant', 'x', '{}', 'SUCCESS', '{}', now())"
                " RETURNING 1",
                txid,
                seq,
            )
        rest: list[str] = []
        while url is not None:
            page, url = read_page(c, listing, url)
            rest += page
    seen = page1 + page2 + rest
    assert len(seen) == len(set(seen))
    assert seen == [*before[:10], "late-ahead", *before[10:]]


def b64json(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@pytest.mark.parametrize("name", list(LISTINGS))
def test_malformed_cursor_is_422_naming_after(active: Instance, name: str) -> None:
    listing, info = LISTINGS[name], active.conninfo
    SEED[name](info, 3)
    with active.client() as c:
        _, url = read_page(c, listing, listing.path, {"limit": 1})
        assert url is not None
        good = dict(parse_qsl(urlsplit(url).query))["after"]
        others = {
            "tenants": b64json('["tenants","t00001"]'),
            "deployments": b64json(
                '["deployments","2024-01-01T00:00:00.000000Z","6f1c1f43-5a5e-4c3e-9a57-0e7d3c1b2a90"]'
            ),
            "transactions": b64json('["transactions",10]'),
        }
        bad = [
            "",
            "!!!",
            "a",
            good[:-1],
            good + "=",
            good[:-2] + ("A" if good[-2] != "A" else "B") + good[-1],
            b64json("[]"),
            b64json("{}"),
            b64json("not json"),
            b64json(f'["{name}"]'),
            b64json(f'["{name}",null]'),
            b64json(f'["{name}",9223372036854775808]'),  # beyond bigint
            b64json(f'["{name}","a\\u0000b"]'),  # NUL: PostgreSQL would refuse it
            b64json(f'["{name}","\\ud800"]'),  # not UTF-8
            *(cursor for kind, cursor in others.items() if kind != name),
        ]
        txs = sql(info, "SELECT count(*) FROM transactions")
        for after in bad:
            r = c.get(listing.path, params={"after": after})
            assert r.status_code == 422, (after, r.status_code, r.text)
            assert r.json()["field"] == "after", (after, r.text)
            assert r.json()["detail"].startswith("after: "), (after, r.text)
        r = c.get(listing.path, params={"after": "A" * 513})
        assert (r.status_code, r.json()["field"]) == (422, "after"), r.text
        for limit in ("0", "1001", "-1", "x"):
            r = c.get(listing.path, params={"limit": limit, "after": good})
            assert (r.status_code, r.json()["field"]) == (422, "limit"), r.text
        assert sql(info, "SELECT count(*) FROM transactions") == txs  # nothing changed
        assert read_page(c, listing, listing.path, {"after": good})[0]  # the good one works


def test_openapi_documents_pagination(active: Instance) -> None:
    with active.client() as c:
        doc = c.get("/openapi.json").json()
    schemas = doc["components"]["schemas"]
    for listing in LISTINGS.values():
        op = doc["paths"][listing.path]["get"]
        params = {p["name"]: p for p in op["parameters"]}
        assert {"after", "limit"} <= set(params)
        assert params["limit"]["schema"]["maximum"] == 1000
        assert params["limit"]["schema"]["minimum"] == 1
        assert "next" in params["after"]["description"]
        ref = op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
        page = schemas[ref.rsplit("/", 1)[1]]
        assert set(page["properties"]) == {listing.key, "next"}
        assert "last page" in page["properties"]["next"]["description"]


def test_schemathesis_finds_no_server_error_and_answers_conform(
    active: Instance, tmp_path: Path
) -> None:
    workdir = tmp_path  # schemathesis leaves a .schemathesis/ cache in its working directory
    st = str(Path(sys.executable).parent / "st")  # the venv's schemathesis CLI
    with active.client() as c:
        c.post("/v0/tenants", json={"name": "t"})
    t0 = time.monotonic()
    proc = subprocess.run(
        [st, "run", f"{active.url}/openapi.json", "--auth", f"{USER}:{PASSWORD}",
         "--tls-verify", "false",
         "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,"
         "response_schema_conformance,response_headers_conformance",
         "--max-examples", "50", "--no-color",
         "--seed", "1", "--request-timeout", "10"],
        capture_output=True, text=True, timeout=300, check=False, cwd=workdir,
    )  # fmt: skip
    print(f"schemathesis: {time.monotonic() - t0:.1f} s\n" + proc.stdout[-1500:])
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]


def test_esc_manager_process(pg: Pg, database: str, node_roots: list[Path]) -> None:
    """The real console script: ESC_ROOT, config file, log file, control socket, SIGTERM."""
    root = node_roots[0]
    paths = NodePaths(root)
    paths.pg_socket_dir.mkdir(parents=True)
    # the agent starts PostgreSQL with its socket in the node's pg_socket_dir; point there
    (paths.pg_socket_dir / f".s.PGSQL.{pg.port}").symlink_to(pg.sockdir / f".s.PGSQL.{pg.port}")
    http_port, https_port, portal_port = free_port(), free_port(), free_port()
    paths.etc_dir.mkdir(parents=True)
    paths.config_file.write_text(
        f'node_name = "esc-ha-0"\n[database]\nport = {pg.port}\n'
        f'[manager]\nbind = "127.0.0.1"\nhttps_port = {https_port}\nhttp_port = {http_port}\n'
        f"portal_port = {portal_port}\n"
    )
    exe = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "esc-manager"
    proc = subprocess.Popen(
        [str(exe)], env=os.environ | {"ESC_ROOT": str(root)}, stderr=subprocess.PIPE, text=True
    )
    try:
        ctl = ManagerControl(control_socket(paths), timeout=5)

        last: list[str] = []

        def up() -> bool:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            try:
                st = ctl.status()
            except ServiceError as exc:
                last.append(str(exc))
                return False
            last.append(st.detail)
            return st.healthy

        try:
            eventually(up, 30, "esc-manager up and its database reachable")
        except AssertionError:
            logf = paths.log_dir / "escmanager.log"
            raise AssertionError(f"{last[-1:]}; log: {logf.read_text()[-3000:]}") from None
        ctl.activate("esc-ha-0")
        plain = httpx.post(f"http://127.0.0.1:{http_port}/v0/tenants?x=1", auth=AUTH, timeout=10)
        assert plain.status_code == 308  # plain HTTP: only a redirect, nothing processed
        assert plain.headers["location"] == f"https://127.0.0.1:{https_port}/v0/tenants?x=1"
        base = f"https://127.0.0.1:{https_port}"
        with httpx.Client(base_url=base, auth=AUTH, timeout=10, verify=False) as c:
            r = c.post("/v0/tenants", json={"name": "proc"})
            assert r.status_code == 202, r.text
            # throughput of the real process, 8 clients in this (separate) process
            n, per = 8, 100

            def load(k: int) -> list[float]:
                out = []
                with httpx.Client(base_url=c.base_url, auth=AUTH, timeout=10, verify=False) as cc:
                    for i in range(per):
                        t0 = time.perf_counter()
                        assert cc.post("/v0/tenants", json={"name": f"l{k}-{i}"}).status_code == 202
                        out.append((time.perf_counter() - t0) * 1000)
                return out

            t0 = time.perf_counter()
            with ThreadPoolExecutor(n) as ex:
                lat = sorted(x for r in ex.map(load, range(n)) for x in r)
            rate = len(lat) / (time.perf_counter() - t0)
            p99 = lat[int(len(lat) * 0.99) - 1]
            print(
                f"esc-manager process, {n} clients: {rate:.0f} tenant creates/s, p99 {p99:.1f} ms"
            )
        proc.terminate()
        assert proc.wait(20) == 0
        log = (paths.log_dir / "escmanager.log").read_text()
        assert "activated (primary esc-ha-0)" in log
        assert "escmanager stopped" in log
        assert not control_socket(paths).exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
