"""The agent's peer API server: HTTP on the sync network (the node's own address), giving this
node's view to its peer. Every request is authenticated by the mutual HMAC challenge-response
of :mod:`esc.agent.peerauth` (its MAC checked before any body is read) and every answer to an
authenticated request is signed. The server also bounds what one client can hold: a socket
timeout on every read and write, a deadline per connection, one request per connection, and at
most ``max_connections`` connections at once (one thread each); a connection beyond that is
closed at once, so idle connections cannot pile up threads. With the pair CA (``tls``) it is
HTTPS, both ends presenting a certificate of the pair (:mod:`esc.agent.peer_tls`): the TLS
handshake runs in the connection's thread, within the same timeouts, and a client without the
pair's certificate is refused before any HTTP is read. The client is
:mod:`esc.agent.peer_poller`.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable
from http.server import ThreadingHTTPServer
from typing import Any

from esc.agent.jsonhttp import Handler, _JsonHandler
from esc.agent.peer_tls import PeerTls
from esc.agent.peerauth import (
    AUTH_HEADER,
    AuthError,
    Headers,
    RequestVerifier,
    Verified,
    answer_mac,
    check_body,
    derive_key,
)

# The logger of esc.agent.api, which this code came from: log configuration and filters keep
# matching it.
log = logging.getLogger("esc.agent.api")

PEER_IO_TIMEOUT_S = 3.0  # each read or write of a peer API connection
PEER_DEADLINE_S = 5.0  # a whole peer API connection, however it trickles
PEER_MAX_CONNECTIONS = 8  # the peer polls with one at a time


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
        tls: PeerTls | None = None,
    ) -> None:
        self.handle_api = handle
        self.tls = tls
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

    # --- TLS ------------------------------------------------------------------------------

    def get_request(self) -> tuple[Any, Any]:
        sock, addr = super().get_request()
        if self.tls is None:
            return sock, addr
        try:  # no I/O here: the handshake runs in the connection's thread
            ctx = self.tls.context(server=True)
            return ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr
        except (OSError, ValueError) as exc:
            sock.close()
            self.note_refusal(f"TLS: this node's certificate unusable: {exc}", addr)
            raise OSError(f"TLS: {exc}") from exc  # socketserver drops this connection

    def _handshake(self, request: Any, client_address: Any) -> bool:
        if self.tls is None:
            return True
        try:
            request.settimeout(self.io_timeout)
            request.do_handshake()
        except (OSError, ValueError) as exc:
            self.note_refusal(f"TLS: {exc}", client_address)
            return False
        return True

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
            if self._handshake(request, client_address):
                super().process_request_thread(request, client_address)
            else:
                self.shutdown_request(request)
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
    ``bounds``: ``max_connections``, ``io_timeout``, ``deadline_s``, ``clock`` (tests), ``tls``
    (the pair's certificates: HTTPS with client certificates).
    ``poll_interval``: how often the deadline is checked at most (and ``shutdown()``'s wait)."""
    srv = _PeerServer(
        addr, port, secret, handle, self_name=self_name, peer_name=peer_name, **bounds
    )
    poll = min(poll_interval, srv.deadline_s / 2)
    threading.Thread(
        target=srv.serve_forever, kwargs={"poll_interval": poll}, name="peer-api", daemon=True
    ).start()
    return srv
