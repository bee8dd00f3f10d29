"""Callback targets: the policy, resolution once and pinning, delivery to the pinned address,
and the API refusing a target before it takes a database connection."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from esc.config.schema import parse_config
from esc.errors import ConfigError
from esc.manager.api import build_api
from esc.manager.auth import Verdict
from esc.manager.callbacks import (
    CallbackGuard,
    CallbackPolicy,
    CallbackRefused,
    IPAddress,
    PinnedCallback,
)
from esc.manager.worker import post_callback

AUTH = ("admin", "s3cret")


class FakeResolver:
    """Answers from a table and counts lookups; a name not in it does not resolve."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table
        self.lookups: list[str] = []

    async def __call__(self, host: str, port: int) -> Sequence[IPAddress]:
        self.lookups.append(host)
        if host not in self.table:
            raise OSError(f"[Errno -2] Name or service not known: {host}")
        return [ipaddress.ip_address(a) for a in self.table[host]]


def pin(url: str, resolver: FakeResolver | None = None, **policy: Any) -> PinnedCallback:
    guard = CallbackGuard(CallbackPolicy(**policy), resolver or FakeResolver({}))
    return asyncio.run(guard.pin(url))


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://127.0.0.1/cb", "loopback"),
        ("http://127.9.9.9:8080/cb", "loopback"),
        ("http://[::1]/cb", "loopback"),
        ("http://[::ffff:127.0.0.1]/cb", "loopback"),  # IPv4-mapped is the IPv4 address
        ("http://169.254.169.254/latest/meta-data", "metadata"),
        ("http://[fd00:ec2::254]/", "metadata"),
        ("http://169.254.1.1/", "link-local"),
        ("http://[fe80::1]/", "link-local"),
        ("http://0.0.0.0/", "unspecified"),
        ("http://[::]/", "unspecified"),
        ("http://224.0.0.1/", "multicast"),
        ("http://[ff02::1]/", "multicast"),
        ("http://255.255.255.255/", "reserved"),
        ("ftp://192.0.2.1/", "scheme"),
    ],
)
def test_refused_literal_targets(url: str, why: str) -> None:
    resolver = FakeResolver({})
    with pytest.raises(CallbackRefused, match=f"^Callback: .*{why}"):
        pin(url, resolver)
    assert resolver.lookups == []  # a literal is never looked up


def test_a_name_is_resolved_once_and_every_address_must_be_allowed() -> None:
    resolver = FakeResolver(
        {
            "hook.example": ["192.0.2.7", "2001:db8::7"],
            "sneaky.example": ["192.0.2.8", "127.0.0.1"],  # one bad address is enough
            "meta.example": ["169.254.169.254"],
        }
    )
    pinned = pin("https://hook.example:8443/cb?x=1", resolver)
    assert pinned == PinnedCallback("https://hook.example:8443/cb?x=1", "192.0.2.7")
    assert resolver.lookups == ["hook.example"]
    for name, why in [("sneaky", "127.0.0.1 is a loopback"), ("meta", "metadata")]:
        with pytest.raises(CallbackRefused, match=why):
            pin(f"http://{name}.example/", resolver)
    with pytest.raises(CallbackRefused, match="does not resolve"):
        pin("http://nowhere.example/", resolver)


def test_a_name_that_does_not_resolve_in_time_is_refused() -> None:
    async def stuck(host: str, port: int) -> Sequence[IPAddress]:
        await asyncio.Event().wait()  # never answers
        return []

    guard = CallbackGuard(CallbackPolicy(), stuck, resolve_timeout_s=0.01)
    with pytest.raises(CallbackRefused, match="did not resolve within"):
        asyncio.run(guard.pin("http://slow.example/cb"))


def test_allowed_targets_and_callback_networks() -> None:
    assert pin("http://192.0.2.5/cb").address == "192.0.2.5"
    assert pin("http://10.1.2.3/cb").address == "10.1.2.3"  # private networks are fine
    nets = (ipaddress.ip_network("198.51.100.0/24"),)
    with pytest.raises(CallbackRefused, match=r"not in manager\.callback_networks"):
        pin("http://192.0.2.5/cb", networks=nets)
    assert pin("http://198.51.100.9/cb", networks=nets).address == "198.51.100.9"
    # a network inside a refused class lets that class in; a wide one around it does not
    local = (ipaddress.ip_network("127.0.0.0/8"),)
    assert pin("http://127.0.0.1:9/cb", networks=local).address == "127.0.0.1"
    wide = (ipaddress.ip_network("0.0.0.0/0"),)
    with pytest.raises(CallbackRefused, match="loopback"):
        pin("http://127.0.0.1/cb", networks=wide)
    # the metadata address never
    link = (ipaddress.ip_network("169.254.0.0/16"),)
    with pytest.raises(CallbackRefused, match="metadata"):
        pin("http://169.254.169.254/", networks=link)
    assert pin("http://169.254.1.1/", networks=link).address == "169.254.1.1"


def test_callback_networks_config() -> None:
    m = parse_config({"manager": {"callback_networks": ["198.51.100.0/24", "2001:db8::/32"]}})
    assert [str(n) for n in m.manager.callback_networks] == ["198.51.100.0/24", "2001:db8::/32"]
    assert parse_config({}).manager.callback_networks == ()
    for bad in (["198.51.100.1/24"], ["nope"], [24], "198.51.100.0/24"):
        with pytest.raises(ConfigError, match=r"manager\.callback_networks"):
            parse_config({"manager": {"callback_networks": bad}})


def test_the_request_goes_to_the_pinned_address_with_the_name_as_host_and_sni() -> None:
    target, headers, ext = PinnedCallback("https://hook.example:8443/cb?x=1", "192.0.2.7").request()
    assert (target, headers, ext) == (
        "https://192.0.2.7:8443/cb?x=1",
        {"Host": "hook.example:8443"},
        {"sni_hostname": "hook.example"},
    )
    target, headers, ext = PinnedCallback("http://hook.example/cb", "2001:db8::7").request()
    assert (target, headers, ext) == ("http://[2001:db8::7]/cb", {"Host": "hook.example"}, {})
    target, headers, ext = PinnedCallback("https://[2001:db8::7]/cb", "2001:db8::7").request()
    assert (target, headers, ext) == ("https://[2001:db8::7]/cb", {"Host": "[2001:db8::7]"}, {})


def test_delivery_connects_to_the_pinned_address_only() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(204)

    async def go() -> str:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            pinned = PinnedCallback("https://hook.example/cb", "192.0.2.7")
            return await post_callback(client, pinned, {"ESC-Transaction-Id": "t1"}, {"a": 1})

    assert asyncio.run(go()) == ""
    (req,) = seen
    assert str(req.url) == "https://192.0.2.7/cb"
    assert req.headers["Host"] == "hook.example"
    assert req.headers["ESC-Transaction-Id"] == "t1"
    assert req.extensions["sni_hostname"] == "hook.example"


# --- the API, in-process, without a database -----------------------------------------------


class NoPool:
    """The database seam: any connection taken is recorded (and fails the request)."""

    def __init__(self) -> None:
        self.taken = 0

    def connection(self) -> Any:
        self.taken += 1
        raise AssertionError("a database connection was taken")


class FakeUsers:
    async def check(self, user: str, password: str, client: str | None = None) -> Verdict:
        return Verdict("admin") if (user, password) == AUTH else Verdict()


@dataclass
class FakeManager:
    callbacks: CallbackGuard
    node_name: str = "esc-ha-0"
    serving: bool = True
    active: bool = True
    primary: str | None = "esc-ha-0"
    primary_url: str | None = None
    pool: NoPool = field(default_factory=NoPool)


def post(manager: FakeManager, callback: str) -> httpx.Response:
    app = build_api(manager, auth=FakeUsers())  # type: ignore[arg-type]

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="https://api") as c:
            headers = {"Callback": callback}
            return await c.post("/v0/tenants", json={"name": "t"}, headers=headers, auth=AUTH)

    return asyncio.run(go())


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/cb",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]:8080/cb",
        "http://rebind.example/cb",
    ],
)
def test_a_refused_callback_is_422_before_anything_is_created(url: str) -> None:
    resolver = FakeResolver({"rebind.example": ["127.0.0.1"]})
    manager = FakeManager(CallbackGuard(CallbackPolicy(), resolver))
    r = post(manager, url)
    assert r.status_code == 422, r.text
    assert r.json()["field"] == "Callback"
    assert r.json()["detail"].startswith("Callback: refused: ")
    # no transaction and no callback row: the worker, which alone connects to callbacks,
    # has nothing to send; the name was looked up once, a literal not at all
    assert manager.pool.taken == 0
    assert resolver.lookups == (["rebind.example"] if "rebind" in url else [])


def test_an_allowed_callback_goes_on_to_the_database() -> None:
    policy = CallbackPolicy((ipaddress.ip_network("198.51.100.0/24"),))
    manager = FakeManager(CallbackGuard(policy, FakeResolver({})))
    assert post(manager, "http://192.0.2.5/cb").status_code == 422  # outside the networks
    assert manager.pool.taken == 0
    with pytest.raises(AssertionError, match="database connection"):
        post(manager, "http://198.51.100.5/cb")  # accepted: the route takes a connection
    assert manager.pool.taken == 1


class RecordingPool:
    """The worker's database: records the statements it runs."""

    def __init__(self) -> None:
        self.statements: list[tuple[str, tuple[Any, ...]]] = []

    def connection(self) -> Any:
        pool = self

        class Conn:
            async def __aenter__(self) -> Conn:
                return self

            async def __aexit__(self, *exc: object) -> None:
                return None

            def transaction(self) -> Conn:
                return self

            async def execute(self, query: str, params: tuple[Any, ...]) -> None:
                pool.statements.append((query, params))

        return Conn()


def test_an_unpinned_row_from_before_is_checked_at_delivery_and_never_sent() -> None:
    from esc.manager.worker import Worker  # noqa: PLC0415

    def refuse(request: httpx.Request) -> httpx.Response:
        raise AssertionError(f"a connection to {request.url}")

    pool = RecordingPool()
    guard = CallbackGuard(CallbackPolicy(), FakeResolver({"old.example": ["127.0.0.1"]}))
    worker = Worker(pool, vim=None, callbacks=guard)  # type: ignore[arg-type]
    worker._http = httpx.AsyncClient(transport=httpx.MockTransport(refuse))

    async def go() -> None:
        await worker._deliver("t1", "http://old.example/cb", None, 0, 200, "ok", {})
        await worker.stop()

    asyncio.run(go())
    ((query, params),) = pool.statements
    assert query.startswith("UPDATE callbacks SET state")
    assert "GAVE_UP" in params
    assert "loopback" in params[1]
