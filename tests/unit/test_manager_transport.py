"""The northbound listeners' transport layers: body limit, HSTS, the plain HTTP redirect."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from starlette.types import Message, Receive, Scope, Send

from esc.config.schema import parse_config
from esc.errors import ConfigError
from esc.manager.transport import (
    HSTS_MAX_AGE,
    BodyLimit,
    Hsts,
    HttpsRedirect,
    redirect_target,
    valid_host,
)

MIB = 1024 * 1024


class EchoApp:
    """Reads the whole body and answers its length; records that it ran."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.calls += 1
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body", False):
                break
        data = json.dumps({"length": len(body)}).encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": data})


def http_scope(headers: list[tuple[bytes, bytes]] | None = None, **kw: Any) -> Scope:
    return {
        "type": "http",
        "method": "POST",
        "path": "/v0/tenants",
        "raw_path": b"/v0/tenants",
        "query_string": b"",
        "headers": headers or [],
        "server": ("192.0.2.10", 8080),
    } | kw


class Chunks:
    """A chunked body without a Content-Length: ``total`` chunks of ``size`` bytes, counted."""

    def __init__(self, size: int, total: int) -> None:
        self.size, self.total, self.read = size, total, 0

    async def __call__(self) -> Message:
        self.read += 1
        more = self.read < self.total
        return {"type": "http.request", "body": b"x" * self.size, "more_body": more}


def run(app: Any, scope: Scope, receive: Any) -> tuple[int, dict[bytes, bytes], bytes]:
    sent: list[Message] = []

    async def send(msg: Message) -> None:
        sent.append(msg)

    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], dict(start.get("headers", [])), body


async def never() -> Message:
    raise AssertionError("the body was read")


def test_a_declared_length_above_the_limit_is_refused_without_reading() -> None:
    app = EchoApp()
    scope = http_scope([(b"content-length", str(2 * MIB).encode())])
    status, _, body = run(BodyLimit(app, MIB), scope, never)
    assert status == 413
    assert json.loads(body)["field"] == "body"
    assert app.calls == 0


def test_a_chunked_body_is_refused_at_the_first_byte_past_the_limit() -> None:
    app = EchoApp()
    source = Chunks(64 * 1024, total=400 * 16)  # a 400 MiB body, 64 KiB at a time
    status, headers, _ = run(BodyLimit(app, MIB), http_scope(), source)
    assert status == 413
    assert headers[b"connection"] == b"close"
    assert app.calls == 0
    assert source.read == 17  # 16 chunks are exactly 1 MiB: the 17th passes it, then no more


def test_a_body_within_the_limit_reaches_the_app_whole() -> None:
    app = EchoApp()
    source = Chunks(1000, total=3)
    status, _, body = run(BodyLimit(app, 3000), http_scope(), source)
    assert (status, json.loads(body), app.calls) == (200, {"length": 3000}, 1)
    exact = [(b"content-length", b"3000")]
    status, _, body = run(BodyLimit(EchoApp(), 3000), http_scope(exact), Chunks(3000, 1))
    assert (status, json.loads(body)) == (200, {"length": 3000})
    status, _, _ = run(BodyLimit(EchoApp(), 2999), http_scope(), Chunks(1000, 3))
    assert status == 413


def test_an_oversized_body_over_http_is_413_json() -> None:
    app = BodyLimit(EchoApp(), MIB)

    async def go() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="https://api") as c:

            async def stream() -> Any:
                for _ in range(40):
                    yield b"y" * 65536

            return [
                await c.post("/v0/tenants", content=b"z" * (2 * MIB)),
                await c.post("/v0/tenants", content=stream()),  # no Content-Length: chunked
                await c.post("/v0/tenants", content=b"{}"),
            ]

    big, chunked, small = asyncio.run(go())
    assert big.status_code == 413
    assert big.headers["content-type"] == "application/json"
    assert big.json() == {"detail": f"body: larger than {MIB} bytes", "field": "body"}
    assert chunked.status_code == 413
    assert small.status_code == 200


def test_max_body_bytes_is_validated() -> None:
    assert parse_config({}).manager.max_body_bytes == MIB
    assert parse_config({"manager": {"max_body_bytes": 4096}}).manager.max_body_bytes == 4096
    for bad in (0, -1, True, "1M"):
        with pytest.raises(ConfigError, match=r"manager\.max_body_bytes"):
            parse_config({"manager": {"max_body_bytes": bad}})
    with pytest.raises(ValueError, match="max_body_bytes"):
        BodyLimit(EchoApp(), 0)


def test_every_https_answer_carries_hsts() -> None:
    status, headers, _ = run(Hsts(EchoApp()), http_scope(), Chunks(1, 1))
    assert status == 200
    assert headers[b"strict-transport-security"] == f"max-age={HSTS_MAX_AGE}".encode()
    assert HSTS_MAX_AGE == 31536000
    # an error answered before the routes (413) carries it too
    refused = Hsts(BodyLimit(EchoApp(), 1))
    _, headers, _ = run(refused, http_scope([(b"content-length", b"2")]), never)
    assert b"strict-transport-security" in headers


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("api.example.org", "api.example.org"),
        ("api.example.org:8080", "api.example.org"),
        ("192.0.2.10:80", "192.0.2.10"),
        ("[2001:db8::1]:8080", "[2001:db8::1]"),
        ("[2001:db8::1]", "[2001:db8::1]"),
        ("evil.example@api.example.org", None),
        ("api.example.org/x", None),
        ("api.example.org:99999", None),
        ("a b", None),
        ("[not-ipv6]", None),
        ("-bad.example", None),
        ("999.1.1.1", None),
        ("", None),
        ("a" * 64 + ".example", None),
        ("api.example.org, evil.example", None),
    ],
)
def test_only_a_well_formed_host_is_used(host: str, expected: str | None) -> None:
    assert valid_host(host) == expected


def test_redirect_targets() -> None:
    assert (
        redirect_target("api.example.org:8080", "/v0/tenants", "limit=5", 8443, "192.0.2.10")
        == "https://api.example.org:8443/v0/tenants?limit=5"
    )
    assert redirect_target("api.example.org", "/", "", 443, "x") == "https://api.example.org/"
    # a Host that is not a host: the node's address instead
    assert (
        redirect_target("evil@x/", "/p", "", 8443, "2001:db8::10")
        == "https://[2001:db8::10]:8443/p"
    )
    assert redirect_target(None, "/p", "", 8443, "192.0.2.10") == "https://192.0.2.10:8443/p"
    # an absolute-form target is not a path: the root; raw bytes are percent-encoded
    assert redirect_target("h.example", "http://evil/", "", 8443, "x") == "https://h.example:8443/"
    assert redirect_target("h.example", "/a\xe9", "q=\x7f", 443, "x") == (
        "https://h.example/a%E9?q=%7F"
    )


def test_plain_http_serves_only_a_redirect_and_never_reads_credentials() -> None:
    app = HttpsRedirect(8443, "192.0.2.100")
    scope = http_scope(
        [
            (b"host", b"api.example.org:8080"),
            (b"authorization", b"Basic YWRtaW46czNjcmV0"),
            (b"content-length", b"2"),
        ],
        raw_path=b"/v0/tenants",
        query_string=b"x=1",
    )
    status, headers, body = run(app, scope, never)  # the body is never read either
    assert status == 308
    assert headers[b"location"] == b"https://api.example.org:8443/v0/tenants?x=1"
    assert json.loads(body)["location"] == "https://api.example.org:8443/v0/tenants?x=1"
    assert b"strict-transport-security" not in headers  # HSTS is ignored over plain HTTP
    # a forged Host: the configured address; without one, the address the client reached
    forged = http_scope([(b"host", b"evil.example/x")])
    _, headers, _ = run(app, forged, never)
    assert headers[b"location"] == b"https://192.0.2.100:8443/v0/tenants"
    _, headers, _ = run(HttpsRedirect(8443), forged, never)
    assert headers[b"location"] == b"https://192.0.2.10:8443/v0/tenants"
