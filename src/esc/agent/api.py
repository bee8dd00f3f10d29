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

The code lives in four modules, re-exported here so ``esc.agent.api`` keeps working:
:mod:`esc.agent.jsonhttp` (the handler and body checks both servers share),
:mod:`esc.agent.local_api` (the unix socket server and :func:`local_request`),
:mod:`esc.agent.peer_api` (the authenticated, bounded peer server) and
:mod:`esc.agent.peer_poller` (:class:`PeerPoller`, the peer API's client).
"""

from __future__ import annotations

from esc.agent.jsonhttp import MAX_BODY, Handler, body_length
from esc.agent.local_api import local_request, serve_unix
from esc.agent.peer_api import (
    PEER_DEADLINE_S,
    PEER_IO_TIMEOUT_S,
    PEER_MAX_CONNECTIONS,
    serve_peer,
)
from esc.agent.peer_poller import PeerPoller

__all__ = [
    "MAX_BODY",
    "PEER_DEADLINE_S",
    "PEER_IO_TIMEOUT_S",
    "PEER_MAX_CONNECTIONS",
    "Handler",
    "PeerPoller",
    "body_length",
    "local_request",
    "serve_peer",
    "serve_unix",
]
