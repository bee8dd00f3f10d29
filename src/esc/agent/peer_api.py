"""The agent's peer API server: HTTP on the sync network (the node's own address), giving this
node's view to its peer. Every request is authenticated by the mutual HMAC challenge-response
of :mod:`esc.agent.peerauth` (its MAC checked before any body is read) and every answer to an
authenticated request is signed. The server also bounds what one client can hold
(:mod:`esc.agent.bounded_http`: timeouts, a deadline per connection, a cap on connections).
With the pair CA (``tls``) it is HTTPS, both ends presenting a certificate of the pair
(:mod:`esc.agent.peer_tls`): the TLS handshake runs in the connection's thread, within the same
timeouts, and a client without the pair's certificate is refused before any HTTP is read. The
client is :mod:`esc.agent.peer_poller`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from esc.agent.bounded_http import BoundedServer, serve_in_thread
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


class _PeerServer(BoundedServer):
    """The peer API's server: authenticated (peerauth), bounded (esc.agent.bounded_http)."""

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
        super().__init__(
            addr,
            port,
            _JsonHandler,
            log=log,
            label="peer API",
            max_connections=max_connections,
            io_timeout=io_timeout,
            deadline_s=deadline_s,
            tls_context=(lambda: tls.context(server=True)) if tls is not None else None,
        )

    # --- authentication -------------------------------------------------------------------

    def authorize(self, method: str, path: str, length: int, headers: Headers) -> Verified:
        if self.verifier is None:
            raise AuthError("agent.peer_secret is empty on this node: every request is refused")
        verified = self.verifier.verify(method, path, length, headers)
        self.refusal_cleared()
        return verified

    def check_body(self, auth: Verified, raw: bytes) -> None:
        check_body(auth, raw)

    def answer_headers(self, auth: Verified | None, status: int, data: bytes) -> dict[str, str]:
        if auth is None or self._key is None:
            return {}  # an unauthenticated request gets no MAC: nothing to learn from it
        mac = answer_mac(self._key, self.self_name, self.peer_name, auth.challenge, status, data)
        return {AUTH_HEADER: mac}


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
    serve_in_thread(srv, "peer-api", poll_interval)
    return srv
