"""The agent's two small HTTP APIs, and their clients.

* Local API: HTTP over a unix socket (``<run>/agent.sock``, mode 0600: root only) for escadm —
  status, history, switchover, force-primary.
* Peer API: HTTP on the sync network (the node's own address), giving this node's view to its
  peer. Both directions are authenticated by a mutual HMAC challenge-response over the shared
  ``agent.peer_secret`` (:mod:`esc.agent.peerauth`, which says why this and not TLS); the
  secret never travels. The client accepts a view only if the answer's MAC is right for the
  nonce it has just sent, and only after :func:`parse_view` checked every field's type: a
  forged, replayed or malformed view counts as "peer unreachable", never as a view.

Both are served from daemon threads; handlers only read snapshots the loop publishes or enqueue
requests, so a slow client can never stall the agent's cycle. Before any body is read, a
request's ``Content-Length`` is checked (400 when negative, not a number or missing on a
``POST``; 413 over :data:`MAX_BODY`) and, on the peer API, its MAC. The peer API also bounds
what one client can hold: a socket timeout on every read and write, a deadline per connection,
one request per connection, and at most ``max_connections`` connections at once (one thread
each); a connection beyond that is closed at once, so idle connections cannot pile up threads.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import os
import socket
import socketserver
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from esc.agent.peerauth import (
    AUTH_HEADER,
    AuthError,
    Headers,
    RequestVerifier,
    Verified,
    answer_mac,
    check_body,
    derive_key,
    sign_request,
    verify_answer,
)
from esc.errors import DriverError
from esc.model import PeerView
from esc.unixhttp import UnixHTTPConnection, request
from esc.wire import parse_view, same_view

log = logging.getLogger("esc.agent.api")
Handler = Callable[[str, str, dict[str, Any]], tuple[int, dict[str, Any]]]

MAX_BODY = 64 * 1024  # a request body or a peer's answer; ours are a few hundred bytes
PEER_IO_TIMEOUT_S = 3.0  # each read or write of a peer API connection
PEER_DEADLINE_S = 5.0  # a whole peer API connection, however it trickles
PEER_MAX_CONNECTIONS = 8  # the peer polls with one at a time
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def body_length(method: str, headers: Headers) -> tuple[int, tuple[int, str] | None]:
    """The body's length from the headers alone, or the (status, error) to refuse it with."""
    if headers.get("Transfer-Encoding") is not None:
        return 0, (400, "Transfer-Encoding: not supported; send Content-Length")
    text = headers.get("Content-Length")
    if text is None:
        if method in _BODY_METHODS:
            return 0, (400, f"Content-Length: required on {method}")
        return 0, None
    text = text.strip()
    if not (text.isascii() and text.isdigit()):
        return 0, (400, f"Content-Length: {text[:20]!r} is not a non-negative integer")
    length = int(text)
    if length > MAX_BODY:
        return 0, (413, f"Content-Length: {length} bytes is over the {MAX_BODY}-byte limit")
    return length, None


class _JsonHandler(BaseHTTPRequestHandler):
    server: Any
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.io_timeout)  # every read and write

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _serve(self, method: str) -> None:
        length, refused = body_length(method, self.headers)
        if refused is not None:
            self._reply(*refused)  # the body is never read: the connection closes
            return
        try:
            auth = self.server.authorize(method, self.path, length, self.headers)
        except AuthError as exc:
            self.server.note_refusal(str(exc), self.client_address)
            self._reply(401, str(exc))
            return
        raw = self.rfile.read(length) if length else b""
        if len(raw) != length:  # the client went away mid-body
            self.close_connection = True
            return
        try:
            self.server.check_body(auth, raw)
        except AuthError as exc:
            self.server.note_refusal(str(exc), self.client_address)
            self._reply(401, str(exc))
            return
        body: Any = {}
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                self._reply(400, "body: not JSON", auth)
                return
            if not isinstance(body, dict):
                self._reply(400, "body: not a JSON object", auth)
                return
        try:
            status, payload = self.server.handle_api(method, self.path, body)
        except Exception as exc:
            status, payload = 500, {"error": f"{type(exc).__name__}: {exc}"}
        self._reply(status, payload, auth)

    def _reply(self, status: int, payload: dict[str, Any] | str, auth: Any = None) -> None:
        """Send a JSON answer (a str is an error message), signed when the request was
        authenticated. After an error the connection closes (an unread body stays unread)."""
        if isinstance(payload, str):
            payload = {"error": payload}
        data = json.dumps(payload).encode()
        close = status >= 400 or self.server.one_request_per_connection
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in self.server.answer_headers(auth, status, data).items():
            self.send_header(name, value)
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")


class _UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    io_timeout: float | None = None  # root only; escadm's requests may wait for the loop
    one_request_per_connection = False

    def __init__(self, path: Path, handle: Handler) -> None:
        self.handle_api = handle
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        old = os.umask(0o177)
        try:
            super().__init__(str(path), _JsonHandler)
        finally:
            os.umask(old)

    def authorize(self, _method: str, _path: str, _length: int, _headers: Any) -> None:
        return None  # the socket is mode 0600: only root gets here

    def check_body(self, _auth: None, _raw: bytes) -> None:
        return None

    def answer_headers(self, _auth: None, _status: int, _data: bytes) -> dict[str, str]:
        return {}

    def note_refusal(self, _why: str, _addr: Any) -> None:
        return None

    def get_request(self) -> tuple[Any, Any]:
        conn, _ = self.socket.accept()
        return conn, ("local", 0)


class _PeerServer(ThreadingHTTPServer):
    """The peer API's server: authenticated (peerauth), bounded (module docstring)."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 64
    one_request_per_connection = True

    def __init__(
        self,
        addr: str,
        port: int,
        secret: str,
        handle: Handler,
        *,
        self_name: str,
        peer_name: str,
        max_connections: int = PEER_MAX_CONNECTIONS,
        io_timeout: float = PEER_IO_TIMEOUT_S,
        deadline_s: float = PEER_DEADLINE_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.handle_api = handle
        self.self_name = self_name
        self.peer_name = peer_name
        self._key = derive_key(secret) if secret else None
        self.verifier = (
            RequestVerifier(self._key, peer_name, self_name, clock=clock) if self._key else None
        )
        self.io_timeout = io_timeout
        self.deadline_s = deadline_s
        self.max_connections = max_connections
        self._slots = threading.BoundedSemaphore(max_connections)
        self._open: dict[socket.socket, float] = {}
        self._open_lock = threading.Lock()
        self._last_refusal: str | None = None
        self._refusal_logged_at = 0.0
        self._excess = 0
        self._excess_logged_at = 0.0
        self.address_family = socket.AF_INET6 if ":" in addr else socket.AF_INET
        super().__init__((addr, port), _JsonHandler)

    # --- authentication -------------------------------------------------------------------

    def authorize(self, method: str, path: str, length: int, headers: Headers) -> Verified:
        if self.verifier is None:
            raise AuthError("agent.peer_secret is empty on this node: every request is refused")
        verified = self.verifier.verify(method, path, length, headers)
        self._last_refusal = None  # the next refusal is logged again
        return verified

    def check_body(self, auth: Verified, raw: bytes) -> None:
        check_body(auth, raw)

    def answer_headers(self, auth: Verified | None, status: int, data: bytes) -> dict[str, str]:
        if auth is None or self._key is None:
            return {}  # an unauthenticated request gets no MAC: nothing to learn from it
        mac = answer_mac(self._key, self.self_name, self.peer_name, auth.challenge, status, data)
        return {AUTH_HEADER: mac}

    def note_refusal(self, why: str, addr: Any) -> None:
        """Logged once per change of reason, at most once a second (a flood cannot fill the
        log)."""
        now = time.monotonic()
        if why != self._last_refusal and now - self._refusal_logged_at >= 1.0:
            log.warning("peer API: refused a request from %s: %s", addr[0], why)
            self._last_refusal = why
            self._refusal_logged_at = now

    # --- bounds ---------------------------------------------------------------------------

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self._excess += 1
            self.shutdown_request(request)  # closed at once: no thread, no read
            now = time.monotonic()
            if now - self._excess_logged_at >= 10.0:
                log.warning(
                    "peer API: %d connection(s) closed at once: %d already open (from %s)",
                    self._excess,
                    self.max_connections,
                    client_address[0],
                )
                self._excess, self._excess_logged_at = 0, now
            return
        with self._open_lock:
            self._open[request] = time.monotonic()
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._release(request)
            self.shutdown_request(request)
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._release(request)

    def _release(self, request: Any) -> None:
        with self._open_lock:
            if self._open.pop(request, None) is None:
                return
        self._slots.release()

    def service_actions(self) -> None:
        """Run by serve_forever between polls: cut connections past their deadline (a client
        that trickles a byte before each timeout would otherwise keep its slot)."""
        now = time.monotonic()
        with self._open_lock:
            late = [s for s, t in self._open.items() if now - t > self.deadline_s]
        for sock in late:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def open_connections(self) -> int:
        with self._open_lock:
            return len(self._open)


def serve_unix(path: Path, handle: Handler) -> socketserver.BaseServer:
    srv = _UnixServer(path, handle)
    threading.Thread(target=srv.serve_forever, name="local-api", daemon=True).start()
    return srv


def serve_peer(
    addr: str,
    port: int,
    secret: str,
    handle: Handler,
    *,
    self_name: str,
    peer_name: str,
    poll_interval: float = 0.5,
    **bounds: Any,
) -> _PeerServer:
    """The peer API on ``addr``:``port``, answering only ``peer_name`` (module docstring).
    ``bounds``: ``max_connections``, ``io_timeout``, ``deadline_s``, ``clock`` (tests).
    ``poll_interval``: how often the deadline is checked at most (and ``shutdown()``'s wait)."""
    srv = _PeerServer(
        addr, port, secret, handle, self_name=self_name, peer_name=peer_name, **bounds
    )
    poll = min(poll_interval, srv.deadline_s / 2)
    threading.Thread(
        target=srv.serve_forever, kwargs={"poll_interval": poll}, name="peer-api", daemon=True
    ).start()
    return srv


# --- clients ---------------------------------------------------------------------------------


def local_request(
    sock: Path, method: str, path: str, body: dict[str, Any] | None = None, timeout: float = 10.0
) -> tuple[int, dict[str, Any]]:
    """Call the agent's local API (escadm's only way to the agent)."""
    return request(UnixHTTPConnection(sock, timeout), method, path, body)


def _shown(raw: bytes) -> str:
    """An unauthenticated answer's text, safe to log: printable, short."""
    text = raw[:200].decode(errors="replace")
    with contextlib.suppress(ValueError, AttributeError):
        text = str(json.loads(raw).get("error", text))[:200]
    return "".join(c if c.isprintable() else "?" for c in text)


@dataclass
class _Seen:
    view: dict[str, Any]  # as published (verified, parsed), for last_view()
    parsed: PeerView
    at: float
    cycle_at: float  # when the peer's agent was last seen publishing a new cycle


class PeerPoller:
    """Polls the peer's view every ``interval``; ``current()`` says what we know right now.

    Each poll is authenticated both ways (:mod:`esc.agent.peerauth`) and its view parsed by
    :func:`parse_view`. A poll that fails for any reason (transport, refused, a wrong or
    missing MAC, a malformed view) makes the peer unreachable at once; the reason is logged
    once per change."""

    def __init__(
        self,
        host: str,
        port: int,
        secret: str,
        interval: float,
        timeout: float,
        on_change: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
        *,
        self_name: str,
        peer_name: str,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.host = host
        self.port = port
        self._key = derive_key(secret) if secret else None
        self.interval = interval
        self.timeout = timeout
        self.on_change = on_change
        self.clock = clock
        self.wall = wall  # the request's timestamp (the peer checks it against its clock)
        self.self_name = self_name
        self.peer_name = peer_name
        self._last: _Seen | None = None
        self._started = clock()
        self._lock = threading.Lock()
        self._reachable = False
        self.problem: str | None = "not polled yet"  # why the last poll failed (None: it worked)

    def start(self) -> None:
        threading.Thread(target=self._run, name="peer-poll", daemon=True).start()

    def fetch(self) -> tuple[dict[str, Any], PeerView]:
        """One authenticated poll: (the view as published, parsed). Raises DriverError."""
        if self._key is None:
            raise DriverError("agent.peer_secret is empty: the peer cannot be authenticated")
        ch, headers = sign_request(
            self._key, self.self_name, self.peer_name, "GET", "/peer", now=self.wall()
        )
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            conn.request("GET", "/peer", headers=headers)
            resp = conn.getresponse()
            if resp.length is not None and resp.length > MAX_BODY:
                raise DriverError(f"GET /peer: answer of {resp.length} bytes refused")
            raw = resp.read(MAX_BODY + 1)
        except (OSError, http.client.HTTPException) as exc:
            raise DriverError(f"GET /peer: {exc or type(exc).__name__}") from exc
        finally:
            conn.close()
        if len(raw) > MAX_BODY:
            raise DriverError(f"GET /peer: answer over {MAX_BODY} bytes refused")
        if resp.status != 200:
            raise DriverError(f"peer answered {resp.status}: {_shown(raw)}")
        verify_answer(
            self._key,
            self.peer_name,
            self.self_name,
            ch,
            resp.status,
            raw,
            resp.getheader(AUTH_HEADER),
        )
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise DriverError("peer view: not JSON") from exc
        return data, parse_view(data, self.peer_name)

    def poll_once(self) -> bool:
        """One poll, its result recorded; True if the view changed or the reachability did."""
        problem: str | None = None
        got: tuple[dict[str, Any], PeerView] | None = None
        try:
            got = self.fetch()
        except DriverError as exc:
            problem = str(exc)
        except Exception as exc:  # a bug must not end the poller (the peer would look alive)
            problem = f"{type(exc).__name__}: {exc}"
            if problem != self.problem:
                log.exception("peer %s: poll failed", self.peer_name)
        self._note(problem)
        with self._lock:
            was_reachable, before = self._reachable, self._last
            if got is not None:
                now = self.clock()
                cycle = got[0].get("cycle")
                # An agent that does not publish its cycle (older) counts as always cycling.
                cycle_at = now
                if before is not None and cycle is not None and cycle == before.view.get("cycle"):
                    cycle_at = before.cycle_at
                self._last = _Seen(got[0], got[1], now, cycle_at)
            # A failed poll counts at once: a dead peer process answers with a refusal,
            # and waiting for the timeout would make us refuse the VIP as "peer serving".
            self._reachable = got is not None
            after = self._last
        return was_reachable != self._reachable or not same_view(
            before.view if before else None, after.view if after else None
        )

    def _note(self, problem: str | None) -> None:
        if problem == self.problem:
            return
        if problem is not None:
            log.warning(
                "peer %s (%s): %s: counted as unreachable", self.peer_name, self.host, problem
            )
        elif self.problem != "not polled yet":
            log.info("peer %s (%s): answering again", self.peer_name, self.host)
        self.problem = problem

    def _run(self) -> None:
        while True:
            t0 = self.clock()
            if self.poll_once():
                self.on_change()
            time.sleep(max(0.0, self.interval - (self.clock() - t0)))

    def _fresh(self) -> bool:
        return self._last is not None and self.clock() - self._last.at <= self.timeout

    def current(self) -> PeerView:
        with self._lock:
            last = self._last
            fresh = self._reachable and self._fresh()
        now = self.clock()
        if last is None:
            return PeerView(reachable=False, silent_for=now - self._started)
        if not fresh:
            return PeerView(
                reachable=False,
                silent_for=now - last.at,
                last_outdated_lsn=last.parsed.last_outdated_lsn,
            )
        return replace(last.parsed, silent_for=now - last.at, agent_silent_for=now - last.cycle_at)

    def last_view(self) -> dict[str, Any] | None:
        with self._lock:
            return dict(self._last.view) if self._last else None
