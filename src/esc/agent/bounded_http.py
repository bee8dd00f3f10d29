"""An HTTP server that bounds what one client can hold, for the agent's listeners on the network
(the peer API, :mod:`esc.agent.peer_api`; the monitoring listener, :mod:`esc.agent.monitor_http`):
a socket timeout on every read and write, a deadline per connection, one request per connection,
and at most ``max_connections`` connections at once (one thread each); a connection beyond that
is closed at once, so idle connections cannot pile up threads. With TLS (``tls_context``) the
handshake runs in the connection's thread, within the same timeouts.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class BoundedServer(ThreadingHTTPServer):
    """See the module docstring. ``tls_context``: the server's TLS context for each new
    connection (called per connection: a rotated certificate is picked up), or None."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 64
    one_request_per_connection = True

    def __init__(
        self,
        addr: str,
        port: int,
        handler: type[BaseHTTPRequestHandler],
        *,
        log: logging.Logger,
        label: str,
        max_connections: int,
        io_timeout: float,
        deadline_s: float,
        tls_context: Callable[[], ssl.SSLContext] | None = None,
    ) -> None:
        self.log = log
        self.label = label
        self.tls_context = tls_context
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
        super().__init__((addr, port), handler)

    def server_bind(self) -> None:
        if self.address_family == socket.AF_INET6:  # "::" serves IPv4 too (mapped)
            with contextlib.suppress(OSError):
                self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()

    def note_refusal(self, why: str, addr: Any) -> None:
        """Logged once per change of reason, at most once a second (a flood cannot fill the
        log)."""
        now = time.monotonic()
        if why != self._last_refusal and now - self._refusal_logged_at >= 1.0:
            self.log.warning("%s: refused a request from %s: %s", self.label, addr[0], why)
            self._last_refusal = why
            self._refusal_logged_at = now

    def refusal_cleared(self) -> None:
        self._last_refusal = None  # the next refusal is logged again

    # --- TLS ------------------------------------------------------------------------------

    def get_request(self) -> tuple[Any, Any]:
        sock, addr = super().get_request()
        if self.tls_context is None:
            return sock, addr
        try:  # no I/O here: the handshake runs in the connection's thread
            ctx = self.tls_context()
            return ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr
        except (OSError, ValueError) as exc:
            sock.close()
            self.note_refusal(f"TLS: this node's certificate unusable: {exc}", addr)
            raise OSError(f"TLS: {exc}") from exc  # socketserver drops this connection

    def _handshake(self, request: Any, client_address: Any) -> bool:
        if self.tls_context is None:
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
                self.log.warning(
                    "%s: %d connection(s) closed at once: %d already open (from %s)",
                    self.label,
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


def serve_in_thread(srv: BoundedServer, name: str, poll_interval: float) -> None:
    """``srv.serve_forever`` in a daemon thread, checking deadlines every ``poll_interval``
    at most (and half the deadline at least)."""
    poll = min(poll_interval, srv.deadline_s / 2)
    threading.Thread(
        target=srv.serve_forever, kwargs={"poll_interval": poll}, name=name, daemon=True
    ).start()
