"""Transport hardening of the northbound listeners, as plain ASGI layers (no I/O of their own).

- :class:`BodyLimit`: a request body above ``manager.max_body_bytes`` is answered 413 before
  the route sees it. A ``Content-Length`` above the limit is refused without reading a byte; a
  body without one (chunked) is read up to the limit and refused at the first byte past it, so
  at most ``max_body_bytes`` is ever held (the route would buffer that much anyway).
- :class:`Hsts`: every answer of an HTTPS listener carries ``Strict-Transport-Security``
  (one year, :data:`HSTS`), so a browser that reached the portal or the API once over HTTPS
  never falls back to plain HTTP for that host.
- :class:`HttpsRedirect`: the plain HTTP listener (``manager.http_port``) serves nothing but a
  308 to the same path and query over HTTPS (308 keeps the method and body). No route, no
  portal and no ``Authorization`` header is processed there. The target's host is the
  request's ``Host`` only when that is a well-formed host[:port] (a DNS name, an IPv4 literal
  or a bracketed IPv6 literal; its port is replaced by the HTTPS port); otherwise the node's
  configured address (the VIP in a pair) or the address the connection reached.
"""

from __future__ import annotations

import ipaddress
import json
import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

HSTS_MAX_AGE = 31536000  # one year
HSTS = f"max-age={HSTS_MAX_AGE}".encode()

_LABEL = r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)"
_DNS = re.compile(rf"^{_LABEL}(\.{_LABEL})*\.?$")
_HOSTPORT = re.compile(r"^(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.\-]+)(:(?P<port>[0-9]{1,5}))?$")


async def _json(
    send: Send, status: int, body: dict[str, object], headers: list[tuple[bytes, bytes]]
) -> None:
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})


def _too_large(limit: int) -> dict[str, object]:
    return {"detail": f"body: larger than {limit} bytes", "field": "body"}


class BodyLimit:
    """413 for a request body above ``limit`` bytes, before the app reads it."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        if limit <= 0:
            raise ValueError(f"max_body_bytes: must be > 0, not {limit}")
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.limit:
            await _json(send, 413, _too_large(self.limit), [(b"connection", b"close")])
            return
        # read the body here, at most limit + 1 bytes of it, then hand it on as one message
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                await self.app(scope, _replay([message], receive), send)
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await _json(send, 413, _too_large(self.limit), [(b"connection", b"close")])
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        await self.app(scope, _replay([body], receive), send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server refuses a malformed one before we see it
    return None


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """The messages already read, then the server's own receive (a later disconnect)."""
    pending = list(messages)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay


class Hsts:
    """Adds ``Strict-Transport-Security`` to every answer (HTTPS listeners only)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_hsts(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    h
                    for h in message.get("headers", [])
                    if h[0].lower() != b"strict-transport-security"
                ]
                message = {**message, "headers": [*headers, (b"strict-transport-security", HSTS)]}
            await send(message)

        await self.app(scope, receive, with_hsts)


def valid_host(host_header: str) -> str | None:
    """The host part of a ``Host`` header when it is a well-formed host[:port], else None.

    A DNS name (letters, digits, hyphens, dots; labels of 1-63), an IPv4 literal or a bracketed
    IPv6 literal; the port, when given, 1-65535. Anything else (userinfo, a path, spaces,
    a second host) is not a host and is not used in a redirect.
    """
    m = _HOSTPORT.fullmatch(host_header)
    if m is None:
        return None
    host, port = m.group("host"), m.group("port")
    if port is not None and not 1 <= int(port) <= 65535:
        return None
    if host.startswith("["):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return None
        return host
    if len(host) > 253 or not _DNS.fullmatch(host):
        return None
    if host.replace(".", "").isdigit():  # all digits: must then be a valid IPv4 literal
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return None
    return host


def url_host(address: str) -> str:
    """An address as the host part of a URL (IPv6 in brackets)."""
    try:
        return f"[{address}]" if ipaddress.ip_address(address).version == 6 else address
    except ValueError:
        return address


def redirect_target(
    host_header: str | None, path: str, query: str, https_port: int, fallback: str
) -> str:
    """The HTTPS URL a plain HTTP request is sent to: same host (if valid), path and query."""
    host = valid_host(host_header) if host_header is not None else None
    netloc = host or url_host(fallback)
    if not path.startswith("/"):  # an absolute-form or asterisk target: not a path of ours
        path = "/"
    path, query = _ascii(path), _ascii(query)
    if https_port != 443:
        netloc = f"{netloc}:{https_port}"
    target = f"https://{netloc}{path}"
    return f"{target}?{query}" if query else target


def _ascii(text: str) -> str:
    """Percent-encode what is not printable ASCII (the header stays one clean line)."""
    return "".join(c if 0x21 <= ord(c) < 0x7F else f"%{ord(c):02X}" for c in text)


class HttpsRedirect:
    """The whole plain HTTP listener: 308 to the HTTPS URL, nothing else."""

    def __init__(self, https_port: int, fallback: str | None = None) -> None:
        self.https_port = https_port
        self.fallback = fallback

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return  # lifespan is off; websockets are not served
        host = None
        for name, value in scope["headers"]:
            if name == b"host":
                host = value.decode("latin-1")
                break
        server = scope.get("server")
        fallback = self.fallback or (server[0] if server else "localhost")
        raw = scope.get("raw_path") or scope["path"].encode()
        path = raw.decode("latin-1")
        query = scope.get("query_string", b"").decode("latin-1")
        location = redirect_target(host, path, query, self.https_port, fallback)
        body: dict[str, object] = {
            "detail": "plain HTTP is not served here; use HTTPS",
            "location": location,
        }
        await _json(send, 308, body, [(b"location", location.encode("latin-1"))])
