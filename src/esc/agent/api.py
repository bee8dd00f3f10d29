"""The agent's two small HTTP APIs, and their clients.

* Local API: HTTP over a unix socket (``<run>/agent.sock``, mode 0600: root only) for escadm —
  status, history, switchover, force-primary.
* Peer API: HTTP on the sync network (the node's own address), authenticated with the shared
  secret generated at set-up, giving this node's view to its peer.

Both are served from daemon threads; handlers only read snapshots the loop publishes or enqueue
requests, so a slow client can never stall the agent's cycle.
"""

from __future__ import annotations

import contextlib
import hmac
import http.client
import json
import os
import socket
import socketserver
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from esc.errors import DriverError
from esc.model import DbRole, NodeState, PeerView
from esc.unixhttp import UnixHTTPConnection, request

SECRET_HEADER = "X-ESC-Peer-Secret"
Handler = Callable[[str, str, dict[str, Any]], tuple[int, dict[str, Any]]]


class _JsonHandler(BaseHTTPRequestHandler):
    server: Any
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _serve(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body: dict[str, Any] = {}
        if length:
            try:
                body = json.loads(self.rfile.read(length))
            except ValueError:
                self._reply(400, {"error": "body: not JSON"})
                return
        if not self.server.authorize(self):
            self._reply(401, {"error": "peer secret missing or wrong"})
            return
        try:
            status, payload = self.server.handle_api(method, self.path, body)
        except Exception as exc:
            status, payload = 500, {"error": f"{type(exc).__name__}: {exc}"}
        self._reply(status, payload)

    def _reply(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")


class _UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def __init__(self, path: Path, handle: Handler) -> None:
        self.handle_api = handle
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        old = os.umask(0o177)
        try:
            super().__init__(str(path), _JsonHandler)
        finally:
            os.umask(old)

    def authorize(self, _req: BaseHTTPRequestHandler) -> bool:
        return True  # the socket is mode 0600: only root gets here

    def get_request(self) -> tuple[Any, Any]:
        conn, _ = self.socket.accept()
        return conn, ("local", 0)


class _PeerServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, addr: str, port: int, secret: str, handle: Handler) -> None:
        self.handle_api = handle
        self.secret = secret
        self.address_family = socket.AF_INET6 if ":" in addr else socket.AF_INET
        super().__init__((addr, port), _JsonHandler)

    def authorize(self, req: BaseHTTPRequestHandler) -> bool:
        given = req.headers.get(SECRET_HEADER, "")
        return bool(self.secret) and hmac.compare_digest(given, self.secret)


def serve_unix(path: Path, handle: Handler) -> socketserver.BaseServer:
    srv = _UnixServer(path, handle)
    threading.Thread(target=srv.serve_forever, name="local-api", daemon=True).start()
    return srv


def serve_peer(addr: str, port: int, secret: str, handle: Handler) -> socketserver.BaseServer:
    srv = _PeerServer(addr, port, secret, handle)
    threading.Thread(target=srv.serve_forever, name="peer-api", daemon=True).start()
    return srv


# --- clients ---------------------------------------------------------------------------------


def local_request(
    sock: Path, method: str, path: str, body: dict[str, Any] | None = None, timeout: float = 10.0
) -> tuple[int, dict[str, Any]]:
    """Call the agent's local API (escadm's only way to the agent)."""
    return request(UnixHTTPConnection(sock, timeout), method, path, body)


def view_to_peer(view: dict[str, Any], silent_for: float = 0.0) -> PeerView:
    """Parse the JSON a peer published into a :class:`PeerView`."""
    state = view.get("state")
    role = view.get("db_role")
    return PeerView(
        reachable=True,
        silent_for=silent_for,
        state=NodeState(state)
        if isinstance(state, str) and state in NodeState.__members__
        else None,
        db_role=DbRole(role) if role in {r.value for r in DbRole} else None,
        timeline=int(view.get("timeline") or 0),
        lsn=int(view.get("lsn") or 0),
        serving=bool(view.get("serving")),
        outdated_lsn=view.get("outdated_lsn"),
        vip_held=bool(view.get("vip_held")),
        streaming=bool(view.get("streaming")),
        handing_over=bool(view.get("handing_over")),
        receive_lsn=int(view.get("receive_lsn") or 0),
        replay_lag_s=float(view.get("replay_lag_s") or 0.0),
        announced=bool(view.get("announced")),
        reason=str(view.get("reason") or "")[:500],
    )


@dataclass
class _Seen:
    view: dict[str, Any]
    at: float


class PeerPoller:
    """Polls the peer's view every ``interval``; ``current()`` says what we know right now."""

    def __init__(
        self,
        host: str,
        port: int,
        secret: str,
        interval: float,
        timeout: float,
        on_change: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.host = host
        self.port = port
        self.secret = secret
        self.interval = interval
        self.timeout = timeout
        self.on_change = on_change
        self.clock = clock
        self._last: _Seen | None = None
        self._started = clock()
        self._lock = threading.Lock()
        self._reachable = False

    def start(self) -> None:
        threading.Thread(target=self._run, name="peer-poll", daemon=True).start()

    def fetch(self) -> dict[str, Any]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        status, view = request(conn, "GET", "/peer", headers={SECRET_HEADER: self.secret})
        if status != 200:
            raise DriverError(f"peer answered {status}: {view.get('error', '')}")
        return view

    def _run(self) -> None:
        while True:
            t0 = self.clock()
            try:
                view = self.fetch()
            except DriverError:
                view = None
            with self._lock:
                before = (self._reachable, self._last.view if self._last else None)
                if view is not None:
                    self._last = _Seen(view, self.clock())
                # A failed poll counts at once: a dead peer process answers with a refusal,
                # and waiting for the timeout would make us refuse the VIP as "peer serving".
                self._reachable = view is not None
                after = (self._reachable, self._last.view if self._last else None)
            if before != after:
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
            return PeerView(reachable=False, silent_for=now - last.at)
        return view_to_peer(last.view, silent_for=now - last.at)

    def last_view(self) -> dict[str, Any] | None:
        with self._lock:
            return dict(self._last.view) if self._last else None
