"""The peer API's client: :class:`PeerPoller` polls the peer's view on a daemon thread, each
poll authenticated both ways (:mod:`esc.agent.peerauth`) and its answer bounded by
:data:`~esc.agent.jsonhttp.MAX_BODY`. The poller accepts a view only if the answer's MAC is
right for the nonce it has just sent, and only after :func:`~esc.wire.parse_view` checked every
field's type: a forged, replayed or malformed view counts as "peer unreachable", never as a
view. ``current()`` turns the last view into the :class:`~esc.model.PeerView` the loop decides
on (silent when stale).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from esc.agent.jsonhttp import MAX_BODY
from esc.agent.peer_tls import PeerTls
from esc.agent.peerauth import AUTH_HEADER, derive_key, sign_request, verify_answer
from esc.errors import DriverError
from esc.model import PeerView
from esc.wire import parse_view, same_view

# The logger of esc.agent.api, which this code came from: log configuration and filters keep
# matching it.
log = logging.getLogger("esc.agent.api")


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
        tls: PeerTls | None = None,
    ) -> None:
        self.host = host
        self.tls = tls  # the pair's certificates: HTTPS, the peer's naming ``host``
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
        conn: http.client.HTTPConnection
        if self.tls is None:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        else:
            try:
                ctx = self.tls.context(server=False)
            except (OSError, ValueError) as exc:
                raise DriverError(f"TLS: this node's certificate unusable: {exc}") from exc
            conn = http.client.HTTPSConnection(
                self.host, self.port, timeout=self.timeout, context=ctx
            )
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
