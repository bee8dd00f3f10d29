"""Northbound authentication and authorisation (issue 15): roles per route, the dummy KDF for
unknown users, the failed-login backoff, the scrypt cost and rehash, malformed credentials.

The authenticator runs for real (real scrypt at a tiny cost, its users in a dict, an injected
clock); the API is the real app in-process over httpx's ASGI transport, its database a pool
that is down (no route here reaches PostgreSQL: what is checked is the layer in front)."""

from __future__ import annotations

import asyncio
import base64
import logging
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute

from esc.cli.escadm import build_parser, parse_args
from esc.errors import ConfigError
from esc.manager import db
from esc.manager.api import build_api
from esc.manager.auth import CLIENT_INFLIGHT, Authenticator, Verdict, allowed, parse_basic
from esc.manager.callbacks import CallbackGuard
from esc.manager.throttle import CLIENT_FREE, MAX_KEYS, Backoff, LoginThrottle, client_key
from esc.manager.users import (
    DEFAULT_ROLE,
    SCRYPT_COST,
    SCRYPT_MAXMEM,
    ScryptCost,
    add_user,
    check_role,
    hash_cost,
    hash_password,
    needs_rehash,
    set_role,
    verify_password,
)

SMALL = ScryptCost(n=16, r=8, p=1)  # microseconds: the tests' cost
OLD = ScryptCost(n=8, r=8, p=1)  # "an older, lower cost"
PW = "the right password"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Users:
    """The users table as a dict: name -> (hash, role)."""

    rows: dict[str, tuple[str, str]] = field(default_factory=dict)
    lookups: list[str] = field(default_factory=list)

    async def lookup(self, name: str) -> tuple[str, str] | None:
        if "\0" in name:  # what PostgreSQL does with a NUL in a text parameter
            raise psycopg.errors.DataError("A string literal cannot contain NUL (0x00)")
        self.lookups.append(name)
        return self.rows.get(name)

    async def replace_hash(self, name: str, old: str, new: str) -> None:
        if self.rows[name][0] == old:
            self.rows[name] = (new, self.rows[name][1])


class CountingVerify:
    """verify_password, recording the cost of every hash it was asked to check."""

    def __init__(self, gate: Callable[[], None] | None = None) -> None:
        self.costs: list[ScryptCost | None] = []
        self.gate = gate
        self._lock = threading.Lock()

    def __call__(self, password: str, stored: str) -> bool:
        with self._lock:
            self.costs.append(hash_cost(stored))
        if self.gate is not None:
            self.gate()
        return verify_password(password, stored)


def users_with(**roles: str) -> Users:
    return Users({name: (hash_password(PW, cost=SMALL), role) for name, role in roles.items()})


def make_auth(
    users: Users, verify: CountingVerify, clock: Clock | None = None, **kw: Any
) -> Authenticator:
    return Authenticator(users, cost=SMALL, clock=clock or Clock(), verify=verify, **kw)


# --- scrypt cost and rehash --------------------------------------------------------------


def test_default_cost_is_owasps() -> None:
    assert (SCRYPT_COST.n, SCRYPT_COST.r, SCRYPT_COST.p) == (2**17, 8, 1)
    assert SCRYPT_COST.memory() < SCRYPT_MAXMEM
    stored = hash_password(PW)  # the default, for real (~0.4 s)
    assert stored.startswith("scrypt$131072$8$1$")
    assert verify_password(PW, stored)
    assert not needs_rehash(stored)
    assert needs_rehash(hash_password(PW, cost=ScryptCost(2**14, 8, 1)))  # the old default


def test_an_old_hash_verifies_and_is_rehashed_on_success() -> None:
    users = Users({"ops": (hash_password(PW, cost=OLD), "admin")})
    verify, clock = CountingVerify(), Clock()
    auth = make_auth(users, verify, clock)

    async def scenario() -> None:
        assert await auth.check("ops", "wrong password", "192.0.2.1") == Verdict()
        assert hash_cost(users.rows["ops"][0]) == OLD  # a failure changes nothing
        assert await auth.check("ops", PW, "192.0.2.1") == Verdict("admin")
        assert hash_cost(users.rows["ops"][0]) == SMALL
        assert verify_password(PW, users.rows["ops"][0])
        clock.now += 60  # past the cache
        assert await auth.check("ops", PW, "192.0.2.1") == Verdict("admin")

    asyncio.run(scenario())
    assert verify.costs == [OLD, OLD, SMALL]
    # a stronger hash than the current cost is never weakened
    assert not needs_rehash(hash_password(PW, cost=ScryptCost(32, 8, 1)), SMALL)
    assert needs_rehash("garbage", SMALL)


# --- no user enumeration by timing --------------------------------------------------------


def test_an_unknown_user_costs_the_same_kdf_as_a_known_one() -> None:
    users = users_with(ops="admin")
    verify = CountingVerify()
    auth = make_auth(users, verify)

    async def scenario() -> list[Verdict]:
        return [
            await auth.check("ops", "wrong password", "192.0.2.1"),
            await auth.check("nobody", "wrong password", "192.0.2.2"),
            await auth.check("not a user name!", "x", "192.0.2.3"),
            await auth.check("nobody", "wrong password", "192.0.2.2"),  # failures: not cached
        ]

    assert asyncio.run(scenario()) == [Verdict()] * 4
    assert verify.costs == [SMALL] * 4  # one KDF each, at the current cost
    assert users.lookups == ["ops", "nobody", "nobody"]  # an impossible name is not looked up


def test_only_successes_are_cached() -> None:
    users = users_with(ops="admin")
    verify, clock = CountingVerify(), Clock()
    auth = make_auth(users, verify, clock)

    async def scenario() -> None:
        for _ in range(3):
            assert await auth.check("ops", PW, "192.0.2.1") == Verdict("admin")
        assert len(verify.costs) == 1
        clock.now += 5.1
        assert await auth.check("ops", PW, "192.0.2.1") == Verdict("admin")
        assert len(verify.costs) == 2

    asyncio.run(scenario())


# --- backoff -------------------------------------------------------------------------------


def test_one_clients_failures_back_it_off_but_not_the_user_elsewhere() -> None:
    users = users_with(admin="admin")
    verify, clock = CountingVerify(), Clock()
    auth = make_auth(users, verify, clock)

    async def scenario() -> list[Verdict]:
        got = [await auth.check("admin", f"guess {i}", "192.0.2.66") for i in range(50)]
        before = len(verify.costs)
        assert await auth.check("admin", PW, "198.51.100.7") == Verdict("admin")
        assert len(verify.costs) == before + 1  # checked at once, like any login
        return got

    got = asyncio.run(scenario())
    verified = [v for v in got if not v.retry_after]
    assert len(verified) == CLIENT_FREE + 1  # then refused without a KDF
    assert verify.costs.count(SMALL) == CLIENT_FREE + 2
    assert {v.retry_after for v in got[CLIENT_FREE + 1 :]} == {1}
    # even the right password is not checked from the backed-off client until it waits
    assert asyncio.run(auth.check("admin", PW, "192.0.2.66")) == Verdict(retry_after=1)
    clock.now += 1
    assert asyncio.run(auth.check("admin", PW, "192.0.2.66")) == Verdict("admin")


def test_retry_after_counts_down_and_doubles_up_to_the_cap() -> None:
    clock = Clock()
    throttle = LoginThrottle(clock)
    for _ in range(CLIENT_FREE + 5):  # 1, 2, 4, 8, 16 s
        throttle.failed("192.0.2.9", "ops")
    assert throttle.retry_after("192.0.2.9", "ops") == 16
    clock.now += 5.5
    assert throttle.retry_after("192.0.2.9", "ops") == 11  # whole seconds, rounded up
    clock.now += 10.4
    assert throttle.retry_after("192.0.2.9", "ops") == 1
    clock.now += 0.1
    assert throttle.retry_after("192.0.2.9", "ops") == 0
    for _ in range(30):
        throttle.failed("192.0.2.9", "ops")
    assert throttle.retry_after("192.0.2.9", "ops") == 300  # capped
    throttle.succeeded("192.0.2.9", "ops")  # a typo, then the right password
    assert throttle.retry_after("192.0.2.9", "ops") == 0


def test_another_accounts_login_does_not_reset_the_backoff() -> None:
    users = users_with(admin="admin", viewer="read-only")
    verify, clock = CountingVerify(), Clock()
    auth = make_auth(users, verify, clock)

    async def scenario() -> list[Verdict]:
        got = []
        for i in range(CLIENT_FREE + 3):
            clock.now += 60  # past any backoff and the cache: each login is checked
            assert await auth.check("viewer", PW, "192.0.2.66") == Verdict("read-only")
            got.append(await auth.check("admin", f"guess {i}", "192.0.2.66"))
        got.append(await auth.check("admin", "one more", "192.0.2.66"))
        return got

    got = asyncio.run(scenario())
    assert got[:-1] == [Verdict()] * (CLIENT_FREE + 3)
    assert got[-1].retry_after > 0  # the viewer's logins did not wipe the guesses at admin


def test_a_user_under_attack_is_throttled_only_for_failing_clients() -> None:
    users = users_with(admin="admin")
    verify, clock = CountingVerify(), Clock()
    auth = make_auth(users, verify, clock)

    async def scenario() -> None:
        for i in range(30):  # one guess each from many addresses
            assert await auth.check("admin", f"guess {i}", f"203.0.113.{i + 1}") == Verdict()
        # an address that failed once is now held off for this user ...
        assert (await auth.check("admin", PW, "203.0.113.1")).retry_after > 0
        # ... but not for another user, and a clean address logs in at once
        assert await auth.check("other", "x", "203.0.113.1") == Verdict()
        assert await auth.check("admin", PW, "198.51.100.7") == Verdict("admin")

    asyncio.run(scenario())


def test_backoff_memory_is_bounded_oldest_evicted() -> None:
    b = Backoff(free=0, cap_s=10, max_keys=3)
    for i in range(10):
        b.failed(f"k{i}", 100.0 + i)
    assert len(b) == 3
    assert [b.failures(f"k{i}", 110.0) for i in range(10)] == [0] * 7 + [1, 1, 1]
    assert LoginThrottle(Clock()).clients.max_keys == MAX_KEYS
    b.failed("k9", 111.0)  # a repeat offender moves to the young end
    b.failed("new", 112.0)
    assert b.failures("k7", 112.0) == 0 and b.failures("k9", 112.0) == 2
    # forgotten once the backoff ran out and nothing failed for a while
    assert b.retry_after("k9", 112.0) > 0
    assert b.failures("k9", 112.0 + 10_000) == 0


def test_the_throttle_keeps_no_long_names() -> None:
    auth = make_auth(Users(), CountingVerify())
    for i in range(20):  # 20 names of 100 kB that cannot be users': counted as one
        asyncio.run(auth.check(f"{i}" + "x" * 100_000, "pw", f"192.0.2.{i + 1}"))
    assert (len(auth.throttle.users), len(auth.throttle.clients)) == (1, 20)


def test_client_key() -> None:
    assert client_key("192.0.2.1") == "192.0.2.1"
    assert client_key("2001:db8::1") == client_key("2001:db8::ffff") == "2001:db8::/64"
    assert client_key("2001:db8:0:1::1") != client_key("2001:db8::1")
    assert client_key("::ffff:192.0.2.1") == "192.0.2.1"
    assert client_key(None) == "-"


# --- concurrency ---------------------------------------------------------------------------


def test_a_flood_from_one_client_cannot_starve_a_real_login() -> None:
    """64 concurrent wrong passwords from one address run CLIENT_INFLIGHT KDFs; the others are
    429 at once, and the right password from elsewhere runs beside them (the barrier lets the
    three through only together: had the real login queued behind the flood, it would break)."""
    barrier = threading.Barrier(CLIENT_INFLIGHT + 1, timeout=10)
    verify = CountingVerify(gate=barrier.wait)
    auth = make_auth(users_with(admin="admin"), verify)

    async def scenario() -> list[Verdict]:
        flood = [auth.check("admin", f"guess {i}", "192.0.2.66") for i in range(64)]
        return await asyncio.gather(*flood, auth.check("admin", PW, "198.51.100.7"))

    *got, real = asyncio.run(scenario())
    assert real == Verdict("admin")
    assert sum(1 for v in got if v == Verdict()) == CLIENT_INFLIGHT
    assert sum(1 for v in got if v == Verdict(retry_after=1)) == 64 - CLIENT_INFLIGHT
    assert len(verify.costs) == CLIENT_INFLIGHT + 1


def test_a_failing_client_does_not_queue_for_a_busy_slot() -> None:
    entered, release = threading.Event(), threading.Event()

    def gate() -> None:
        entered.set()
        assert release.wait(10)

    verify = CountingVerify(gate=gate)
    auth = make_auth(users_with(admin="admin"), verify, slots=1)

    async def scenario() -> tuple[Verdict, Verdict]:
        auth.throttle.failed(client_key("192.0.2.66"), "admin")  # failed once before
        busy = asyncio.create_task(auth.check("admin", PW, "198.51.100.7"))
        assert await asyncio.to_thread(entered.wait, 10)
        refused = await auth.check("admin", "guess", "192.0.2.66")
        release.set()
        return refused, await busy

    assert asyncio.run(scenario()) == (Verdict(retry_after=1), Verdict("admin"))
    assert len(verify.costs) == 1


def test_identical_concurrent_requests_share_one_kdf() -> None:
    barrier = threading.Barrier(1, timeout=10)
    verify = CountingVerify(gate=barrier.wait)
    auth = make_auth(users_with(ops="admin"), verify)

    async def scenario() -> list[Verdict]:
        return await asyncio.gather(*(auth.check("ops", PW, "192.0.2.1") for _ in range(20)))

    assert asyncio.run(scenario()) == [Verdict("admin")] * 20
    assert len(verify.costs) == 1


# --- the API: roles per route, 429, malformed credentials -----------------------------------


class DownPool:
    """A pool whose database is down: a route that gets this far answers 503."""

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[None]:
        raise psycopg.OperationalError("connection refused")
        yield


@dataclass
class FakeManager:
    node_name: str = "esc-ha-0"
    active: bool = True
    serving: bool = True
    primary: str | None = "esc-ha-0"
    primary_url: str | None = None
    pool: DownPool = field(default_factory=DownPool)
    callbacks: CallbackGuard = field(default_factory=CallbackGuard)

    def wake_worker(self) -> None:
        raise AssertionError("nothing is accepted here")


def basic(text: str | bytes) -> str:
    raw = text.encode() if isinstance(text, str) else text
    return "Basic " + base64.b64encode(raw).decode()


def call(
    auth: Authenticator, method: str, path: str, user: str, client: str = "192.0.2.1", **kw: Any
) -> httpx.Response:
    app = build_api(FakeManager(), auth=auth)  # type: ignore[arg-type]

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, client=(client, 40000))
        async with httpx.AsyncClient(transport=transport, base_url="https://esc") as c:
            headers = {"Authorization": basic(user), **kw.pop("headers", {})}
            return await c.request(method, path, headers=headers, **kw)

    return asyncio.run(go())


def test_read_only_may_read_but_not_write() -> None:
    auth = make_auth(users_with(viewer="read-only", ops="admin"), CountingVerify())
    viewer, ops = f"viewer:{PW}", f"ops:{PW}"
    assert call(auth, "GET", "/openapi.json", viewer).status_code == 200
    assert call(auth, "GET", "/v0/tenants", viewer).status_code == 503  # past auth: the db
    for method, path in (
        ("POST", "/v0/tenants"),
        ("DELETE", "/v0/tenants/t1"),
        ("DELETE", "/v0/deployments/6f1c1b0e-8f3a-4a43-9a43-0c1d2e3f4a5b"),
        ("POST", "/v0/deployments"),
    ):
        r = call(auth, method, path, viewer, json={"name": "t1"})
        assert r.status_code == 403, (method, path)
        assert r.json()["role"] == "read-only"
        assert "read-only" in r.json()["detail"]
    r = call(auth, "POST", "/v0/tenants", ops, json={"name": "t1"})
    assert r.status_code == 503  # the admin's write went through to the database


def test_every_write_route_needs_admin() -> None:
    app = build_api(FakeManager(), auth=make_auth(Users(), CountingVerify()))  # type: ignore[arg-type]
    inner: Any = app
    while not isinstance(inner, FastAPI):
        inner = inner.app
    methods = {m for r in inner.routes if isinstance(r, APIRoute) for m in r.methods}
    assert {"GET", "POST", "DELETE"} <= methods
    for m in methods:
        assert allowed("admin", m)
        assert allowed("read-only", m) == (m in ("GET", "HEAD")), m


def test_openapi_documents_401_429_everywhere_and_403_on_writes() -> None:
    auth = make_auth(users_with(viewer="read-only"), CountingVerify())
    doc = call(auth, "GET", "/openapi.json", f"viewer:{PW}").json()
    ops = [(m, op) for path in doc["paths"].values() for m, op in path.items()]
    assert {m for m, _ in ops} == {"get", "post", "delete"}
    for method, op in ops:
        assert {"401", "429"} <= set(op["responses"]), (method, op["operationId"])
        assert ("403" in op["responses"]) == (method != "get"), (method, op["operationId"])
        assert "Retry-After" in op["responses"]["429"]["headers"]


def test_the_api_answers_429_with_retry_after() -> None:
    auth = make_auth(users_with(ops="admin"), CountingVerify())
    for i in range(CLIENT_FREE + 1):
        assert call(auth, "GET", "/openapi.json", f"ops:guess{i}").status_code == 401
    r = call(auth, "GET", "/openapi.json", f"ops:{PW}")
    assert r.status_code == 429
    assert r.headers["Retry-After"] == "1"
    assert call(auth, "GET", "/openapi.json", f"ops:{PW}", client="198.51.100.7").status_code == 200


def test_a_control_character_in_the_user_name_is_a_plain_401(
    caplog: pytest.LogCaptureFixture,
) -> None:
    users = users_with(ops="admin")
    auth = make_auth(users, CountingVerify())
    assert parse_basic(basic("op\0s:pw")) is None
    assert parse_basic(basic("op\x1bs:pw")) is None
    assert parse_basic(basic("ops:pw\0")) == ("ops", "pw\0")  # the password is only hashed
    with caplog.at_level(logging.WARNING):
        for user in ("op\0s:" + PW, "\x7f:pw", b"\xff\xfe:pw"):
            r = call(auth, "GET", "/openapi.json", user)  # type: ignore[arg-type]
            assert r.status_code == 401, user
            assert r.headers["WWW-Authenticate"].startswith("Basic ")
        r = call(auth, "GET", "/openapi.json", "x", headers={"Authorization": b"Basic \xff\xff"})
        assert r.status_code == 401
    assert not [rec for rec in caplog.records if rec.levelno >= logging.WARNING]
    assert users.lookups == []


# --- roles in the store and escadm ---------------------------------------------------------


class Untouchable:
    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the database was used: {name}")


def test_a_bad_role_is_refused_naming_it_and_nothing_changes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exc:
        parse_args(build_parser(), ["user", "add", "bob", "--role", "bogus", "--password-stdin"])
    assert exc.value.code == 2
    assert "--role" in capsys.readouterr().err
    with pytest.raises(ConfigError) as err:
        add_user(Untouchable(), "bob", "long enough password", "bogus")  # type: ignore[arg-type]
    assert err.value.field == "--role"
    with pytest.raises(ConfigError) as err:
        set_role(Untouchable(), "bob", "root")  # type: ignore[arg-type]
    assert err.value.field == "--role"
    for argv in (["user", "role", "bob", "--role", "root"], ["user", "role", "bob"]):
        with pytest.raises(SystemExit):
            parse_args(build_parser(), argv)
        assert "--role" in capsys.readouterr().err
    args = parse_args(build_parser(), ["user", "add", "bob", "--password-stdin"])
    assert args.role == DEFAULT_ROLE == "admin"
    args = parse_args(build_parser(), ["user", "add", "bob", "--role", "read-only"])
    assert args.role == check_role("read-only") == "read-only"


def test_the_role_migration_makes_existing_users_admin() -> None:
    text = dict(db.MIGRATIONS)[3]
    assert "ADD COLUMN IF NOT EXISTS role" in text
    assert "DEFAULT 'admin'" in text and "'read-only'" in text
