"""The peer API, over real sockets on 127.0.0.1: both ends authenticated by the HMAC
challenge-response (esc.agent.peerauth), the view parsed by type at the boundary, and the
server's bounds (Content-Length before any read, timeouts, a connection cap).

Node esc-ha-0 polls its peer esc-ha-1; the servers here stand for esc-ha-1 (or for an impostor
at its address)."""

from __future__ import annotations

import http.client
import json
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from esc import pki
from esc.agent import loop
from esc.agent.api import MAX_BODY, PeerPoller, serve_peer
from esc.agent.history import History
from esc.agent.loop import Agent
from esc.agent.peer_tls import PeerTls
from esc.agent.peerauth import (
    AUTH_HEADER,
    OLD_SECRET_HEADER,
    AuthError,
    Challenge,
    RequestVerifier,
    answer_mac,
    derive_key,
    sign_request,
)
from esc.config.schema import EscConfig, NodePaths, parse_config
from esc.core.facts import DecideConfig
from esc.drivers.fake import FakeDatabase
from esc.errors import DriverError
from esc.model import DbRole, DbStatus, NodeState, Observation, PeerView, ServiceView, VrrpState
from esc.wire import parse_view, peer_view, same_view

SECRET = "pair-secret-0123456789abcdefghijklmnop"
ME, PEER = "esc-ha-0", "esc-ha-1"


def a_view(**changes: Any) -> dict[str, Any]:
    """What Agent._view publishes: a primary serving."""
    view: dict[str, Any] = {
        "node": PEER,
        "state": "MASTER",
        "db_role": "primary",
        "timeline": 3,
        "lsn": 0x306BB48,
        "receive_lsn": 0,
        "replay_lag_s": 0.0,
        "streaming": False,
        "serving": True,
        "vip_held": True,
        "announced": False,
        "outdated_lsn": None,
        "handing_over": False,
        "reason": "serving as primary",
    }
    view.update(changes)
    return view


# --- the typed parser --------------------------------------------------------------------------


def test_a_well_formed_view_parses_into_the_peer_view() -> None:
    v = parse_view(a_view(outdated_lsn=5, replay_lag_s=1), PEER, silent_for=0.1)
    assert v == PeerView(
        reachable=True,
        silent_for=0.1,
        state=NodeState.MASTER,
        db_role=DbRole.PRIMARY,
        timeline=3,
        lsn=0x306BB48,
        serving=True,
        outdated_lsn=5,
        last_outdated_lsn=5,
        vip_held=True,
        replay_lag_s=1.0,
        reason="serving as primary",
    )
    assert parse_view({**a_view(), "future_key": 1}, PEER).state is NodeState.MASTER
    # "outdated" is optional: an agent older than the field never reports itself outdated.
    assert parse_view({**a_view(), "outdated": True}, PEER).outdated is True
    assert parse_view(a_view(), PEER).outdated is False
    # "served_timeline" is optional too: absent (an older agent) is None, "not known".
    assert parse_view(a_view(), PEER).served_timeline is None
    assert parse_view({**a_view(), "served_timeline": 2}, PEER).served_timeline == 2


@pytest.mark.parametrize(
    ("view", "field_named"),
    [
        (a_view(timeline="x"), "timeline"),
        ({k: v for k, v in a_view().items() if k != "lsn"}, "lsn: missing"),
        (a_view(lsn=-1), "lsn"),
        (a_view(lsn=1 << 64), "lsn"),
        (a_view(timeline=True), "timeline"),  # a bool is not an integer here
        (a_view(outdated_lsn="0/3000000"), "outdated_lsn"),
        (a_view(state="EVIL\n"), "state"),
        (a_view(state=None), "state"),
        (a_view(db_role=3), "db_role"),
        (a_view(serving="yes"), "serving"),
        (a_view(vip_held=1), "vip_held"),
        ({**a_view(), "outdated": "no"}, "outdated"),
        ({**a_view(), "served_timeline": "2"}, "served_timeline"),
        ({**a_view(), "served_timeline": -1}, "served_timeline"),
        (a_view(replay_lag_s=float("nan")), "replay_lag_s"),
        (a_view(replay_lag_s=-1), "replay_lag_s"),
        (a_view(reason=["x"]), "reason"),
        (a_view(node=ME), "node"),  # our own view reflected back
        ([a_view()], "not a JSON object"),
    ],
)
def test_a_malformed_view_is_refused_naming_the_field(view: Any, field_named: str) -> None:
    with pytest.raises(DriverError, match=f"peer view: {field_named}"):
        parse_view(view, PEER)


# --- the replay cache ----------------------------------------------------------------------------


def test_the_nonce_cache_stays_bounded_and_never_lets_a_replay_through() -> None:
    now = [1_000_000.0]
    key = derive_key(SECRET)
    v = RequestVerifier(key, ME, PEER, window_s=120, cache_max=3, clock=lambda: now[0])

    def signed(at: float) -> dict[str, str]:
        return sign_request(key, ME, PEER, "GET", "/peer", now=at)[1]

    first = signed(now[0] - 10)
    v.verify("GET", "/peer", 0, first)
    for i in range(3):
        v.verify("GET", "/peer", 0, signed(now[0] + i))
    assert len(v) == 3  # the oldest was evicted ...
    with pytest.raises(AuthError, match="replayed"):
        v.verify("GET", "/peer", 0, first)  # ... and its time is now below the floor
    with pytest.raises(AuthError, match="replayed"):
        v.verify("GET", "/peer", 0, signed(now[0] - 20))  # fresh nonce, but not newer: refused
    now[0] += 200  # everything cached is now out of the window: forgotten
    v.verify("GET", "/peer", 0, signed(now[0]))
    assert len(v) == 1
    with pytest.raises(AuthError, match="X-ESC-Peer-Time"):
        v.verify("GET", "/peer", 0, first)  # an old request: refused by the window


# --- servers -------------------------------------------------------------------------------------


@dataclass
class Peer:
    """The genuine peer agent's handler: serves ``view``, records what it was asked."""

    view: dict[str, Any] = field(default_factory=a_view)
    calls: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)

    def handle(self, method: str, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        self.calls.append((method, path, body))
        if method == "GET" and path == "/peer":
            return 200, self.view
        return 404, {"error": f"no {method} {path}"}


@pytest.fixture
def peer() -> Peer:
    return Peer()


@pytest.fixture
def start_server() -> Iterator[Callable[..., Any]]:
    servers: list[Any] = []

    def start(handle: Any, secret: str = SECRET, **kw: Any) -> Any:
        kw.setdefault("self_name", PEER)
        kw.setdefault("peer_name", ME)
        kw.setdefault("poll_interval", 0.02)  # a quick shutdown()
        srv = serve_peer("127.0.0.1", 0, secret, handle, **kw)
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        srv.shutdown()
        srv.server_close()


def poller(port: int, secret: str = SECRET, **kw: Any) -> PeerPoller:
    return PeerPoller(
        "127.0.0.1", port, secret, interval=0.05, timeout=2.0, self_name=ME, peer_name=PEER, **kw
    )


def _port(srv: Any) -> int:
    return int(srv.server_address[1])


class _Impostor(ThreadingHTTPServer):
    """Whatever answers at the peer's address without the pair's secret: it answers every
    request with ``answer()`` (status, body, extra headers) and keeps the headers it got."""

    daemon_threads = True

    def __init__(self, answer: Callable[[dict[str, str]], tuple[int, bytes, dict[str, str]]]):
        self.answer = answer
        self.seen: list[dict[str, str]] = []
        super().__init__(("127.0.0.1", 0), _ImpostorHandler)
        threading.Thread(target=self.serve_forever, args=(0.02,), daemon=True).start()


class _ImpostorHandler(BaseHTTPRequestHandler):
    server: _Impostor

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_GET(self) -> None:
        headers = dict(self.headers.items())
        self.server.seen.append(headers)
        status, body, extra = self.server.answer(headers)
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        for k, v in extra.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def impostor() -> Iterator[Callable[..., _Impostor]]:
    made: list[_Impostor] = []

    def make(answer: Callable[[dict[str, str]], tuple[int, bytes, dict[str, str]]]) -> _Impostor:
        srv = _Impostor(answer)
        made.append(srv)
        return srv

    yield make
    for srv in made:
        srv.shutdown()
        srv.server_close()


FORGED = json.dumps(a_view(timeline=99, lsn=1 << 40, outdated_lsn=0)).encode()


# --- both ends authenticated ------------------------------------------------------------------


def test_the_genuine_peer_is_accepted_and_the_secret_never_travels(
    peer: Peer, start_server: Callable[..., Any]
) -> None:
    srv = start_server(peer.handle)
    p = poller(_port(srv))
    assert p.poll_once() is True
    v = p.current()
    assert v.reachable and v.state is NodeState.MASTER and v.timeline == 3 and v.serving
    assert p.problem is None
    # the request carries a nonce, a time and a MAC; neither the secret nor the key
    _, headers = sign_request(derive_key(SECRET), ME, PEER, "GET", "/peer")
    assert SECRET not in json.dumps(headers) and derive_key(SECRET).hex() not in json.dumps(headers)


@pytest.mark.parametrize(
    "mac_key", [None, derive_key("not-the-pair-secret-0123456789")], ids=["no-mac", "other-key"]
)
def test_an_impostor_without_the_secret_is_refused_and_learns_nothing(
    impostor: Callable[..., _Impostor], mac_key: bytes | None
) -> None:
    """No MAC, or one under another key: the forged view ("newer data, you are outdated") is
    never used; the peer counts as unreachable. The request gave the impostor no secret."""

    def forge(headers: dict[str, str]) -> tuple[int, bytes, dict[str, str]]:
        if mac_key is None:
            return 200, FORGED, {}
        ch = Challenge(headers["X-ESC-Peer-Nonce"], headers["X-ESC-Peer-Time"])
        return 200, FORGED, {AUTH_HEADER: answer_mac(mac_key, PEER, ME, ch, 200, FORGED)}

    srv = impostor(forge)
    p = poller(_port(srv))
    p.poll_once()
    v = p.current()
    assert v == PeerView(reachable=False, silent_for=v.silent_for)
    assert p.problem is not None and AUTH_HEADER in p.problem
    assert p.last_view() is None
    sent = json.dumps(srv.seen)
    assert SECRET not in sent and derive_key(SECRET).hex() not in sent
    assert OLD_SECRET_HEADER not in sent


def test_a_replayed_answer_is_refused(
    peer: Peer, start_server: Callable[..., Any], impostor: Callable[..., _Impostor]
) -> None:
    """A man in the middle recorded a genuine answer (a view and its valid MAC) and plays it
    back to a later poll: it is bound to the old nonce, so it does not verify."""
    srv = start_server(peer.handle)
    key = derive_key(SECRET)
    _, headers = sign_request(key, ME, PEER, "GET", "/peer")
    conn = http.client.HTTPConnection("127.0.0.1", _port(srv), timeout=5)
    conn.request("GET", "/peer", headers=headers)
    resp = conn.getresponse()
    recorded = (resp.status, resp.read(), {AUTH_HEADER: resp.getheader(AUTH_HEADER) or ""})
    conn.close()
    assert recorded[0] == 200 and recorded[2][AUTH_HEADER]
    p = poller(_port(impostor(lambda _h: recorded)))
    p.poll_once()
    assert not p.current().reachable
    assert p.problem is not None and "replayed answer" in p.problem


def test_a_replayed_request_is_refused(peer: Peer, start_server: Callable[..., Any]) -> None:
    srv = start_server(peer.handle)
    _, headers = sign_request(derive_key(SECRET), ME, PEER, "GET", "/peer")
    statuses = []
    for _ in range(2):
        conn = http.client.HTTPConnection("127.0.0.1", _port(srv), timeout=5)
        conn.request("GET", "/peer", headers=headers)
        resp = conn.getresponse()
        statuses.append((resp.status, json.loads(resp.read()).get("error")))
        conn.close()
    assert statuses[0][0] == 200
    assert statuses[1] == (401, "X-ESC-Peer-Nonce: replayed")
    assert len(peer.calls) == 1


def test_a_reflected_request_is_refused(peer: Peer, start_server: Callable[..., Any]) -> None:
    """Our own request sent back to our own server (same key, other direction): refused, so
    our poller can never be fed our own view as the peer's."""
    mine = start_server(peer.handle, self_name=ME, peer_name=PEER)
    p = poller(_port(mine))
    p.poll_once()
    assert not p.current().reachable and "401" in str(p.problem)
    assert peer.calls == []


@pytest.mark.parametrize(
    ("secret", "headers", "named"),
    [
        ("other-secret-0123456789abcdefgh", None, "X-ESC-Peer-Auth: wrong"),
        ("", None, "agent.peer_secret is empty"),
        (SECRET, {OLD_SECRET_HEADER: SECRET}, OLD_SECRET_HEADER),
        (SECRET, {}, "X-ESC-Peer-Nonce: missing"),
    ],
)
def test_requests_without_the_right_mac_are_refused_before_the_handler(
    peer: Peer,
    start_server: Callable[..., Any],
    secret: str,
    headers: dict[str, str] | None,
    named: str,
) -> None:
    srv = start_server(peer.handle, secret=secret)
    if headers is None:
        _, headers = sign_request(derive_key(SECRET), ME, PEER, "GET", "/peer")
    conn = http.client.HTTPConnection("127.0.0.1", _port(srv), timeout=5)
    conn.request("GET", "/peer", headers=headers)
    resp = conn.getresponse()
    assert resp.status == 401 and resp.getheader(AUTH_HEADER) is None
    assert named in json.loads(resp.read())["error"]
    conn.close()
    assert peer.calls == []


def test_a_skewed_clock_is_refused_naming_it(peer: Peer, start_server: Callable[..., Any]) -> None:
    srv = start_server(peer.handle, clock=lambda: time.time() + 300)
    p = poller(_port(srv))
    p.poll_once()
    assert not p.current().reachable
    assert "X-ESC-Peer-Time" in str(p.problem) and "check NTP" in str(p.problem)


# --- a bad view never reaches decide() ---------------------------------------------------------


class _Vrrp:
    gate_open = False

    def beat(self) -> None: ...
    def state(self) -> VrrpState:
        return VrrpState.BACKUP

    def set_gate(self, open_: bool) -> None:
        self.gate_open = open_

    def set_rank(self, rank: int) -> None:
        self.rank = rank

    def start(self) -> None: ...


class _Vip:
    def is_held(self) -> bool:
        return False

    def remove(self) -> None: ...


class _Service:
    def ensure_running(self) -> None: ...
    def observe(self) -> ServiceView:
        return ServiceView(active=False, healthy=True)

    def activate(self, primary: str) -> None: ...
    def deactivate(self, primary: str | None) -> None: ...
    def lease(self, until: float | None) -> None: ...
    def reconfigure(self, cfg: EscConfig) -> None: ...


def _agent(tmp_path: Path, peer_source: PeerPoller) -> Agent:
    cfg = parse_config(
        {"ha": {"ha_node_list": ["192.0.2.10", "192.0.2.11"], "kad_vip": "192.0.2.100",
                "kad_vif": "eth0"}}
    )  # fmt: skip
    return Agent(
        cfg=cfg,
        paths=NodePaths(tmp_path),
        dcfg=DecideConfig(node_name=ME, peer_name=PEER, first_node=True),
        peer_host="127.0.0.1",
        vrrp=_Vrrp(),
        vip=_Vip(),
        db=FakeDatabase(ME, DbRole.STANDBY),
        service=_Service(),
        peer=peer_source,
        gateway=None,
        history=History(tmp_path / "history.jsonl"),
    )


@pytest.mark.parametrize(
    "answer",
    [
        "forged",  # an impostor's view ("primary with newer data, you are outdated")
        "malformed",  # the genuine peer (valid MAC) with "timeline": "x"
    ],
)
def test_a_forged_or_malformed_view_never_reaches_decide(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    start_server: Callable[..., Any],
    impostor: Callable[..., _Impostor],
    answer: str,
) -> None:
    if answer == "forged":
        port = _port(impostor(lambda _h: (200, FORGED, {})))
    else:
        port = _port(start_server(Peer(view=a_view(timeline="x")).handle))
    p = poller(port)
    seen: list[Observation] = []
    real = loop.decide

    def recording(obs: Observation, mem: Any, cfg: DecideConfig) -> Any:
        seen.append(obs)
        return real(obs, mem, cfg)

    monkeypatch.setattr(loop, "decide", recording)
    agent = _agent(tmp_path, p)
    with caplog.at_level(logging.WARNING, logger="esc.agent.api"):
        for _ in range(3):
            p.poll_once()
            agent.cycle()  # returns: a bad view is no exception in the loop
    assert [o.peer.reachable for o in seen] == [False, False, False]
    assert all(o.peer.timeline == 0 and o.peer.outdated_lsn is None for o in seen)
    assert agent.mem.self_outdated_from is None  # the forged outdated mark was not taken
    problems = [
        r.getMessage() for r in caplog.records if "counted as unreachable" in r.getMessage()
    ]
    assert len(problems) == 1  # logged once per change, not once per poll
    assert ("timeline" if answer == "malformed" else AUTH_HEADER) in problems[0]


# --- the server's bounds -------------------------------------------------------------------------


def _raw(port: int, data: bytes, timeout: float = 5.0) -> tuple[int, str]:
    """Send raw bytes; (status, error text) of the answer (the client waits ``timeout``)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        got = b""
        while b"\r\n\r\n" not in got or len(got.split(b"\r\n\r\n", 1)[1]) < _length(got):
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
    head, _, body = got.partition(b"\r\n\r\n")
    status = int(head.split()[1])
    return status, json.loads(body).get("error", "")


def _length(got: bytes) -> int:
    for line in got.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":", 1)[1])
    return 0


@pytest.mark.parametrize(
    ("length_header", "status", "named"),
    [
        ("", 400, "Content-Length: required on POST"),
        ("Content-Length: -1\r\n", 400, "Content-Length: '-1' is not a non-negative integer"),
        ("Content-Length: abc\r\n", 400, "Content-Length: 'abc'"),
        (f"Content-Length: {300 << 20}\r\n", 413, "over the 65536-byte limit"),
        ("Transfer-Encoding: chunked\r\n", 400, "Transfer-Encoding"),
    ],
)
def test_a_bad_content_length_is_refused_without_reading_the_body(
    peer: Peer, start_server: Callable[..., Any], length_header: str, status: int, named: str
) -> None:
    """The body is never sent here, so an answer at all shows the server did not try to read it
    (a read would wait for the socket timeout, then close without an answer; the old server
    read until EOF for Content-Length: -1, 300 MiB in the issue)."""
    srv = start_server(peer.handle, io_timeout=10.0)
    req = f"POST /peer HTTP/1.1\r\nHost: x\r\n{length_header}\r\n".encode()
    got_status, error = _raw(_port(srv), req, timeout=5.0)
    assert (got_status, named in error) == (status, True), error
    assert peer.calls == []


def test_the_mac_is_checked_before_the_body_is_read(
    peer: Peer, start_server: Callable[..., Any]
) -> None:
    """A body announced but never sent, without a MAC: 401, so no read of it was waiting."""
    srv = start_server(peer.handle, io_timeout=10.0)
    req = b"POST /peer HTTP/1.1\r\nHost: x\r\nContent-Length: 60000\r\n\r\n"
    status, error = _raw(_port(srv), req, timeout=5.0)
    assert status == 401 and "X-ESC-Peer-Nonce" in error


def test_a_body_that_does_not_match_its_mac_is_refused(
    peer: Peer, start_server: Callable[..., Any]
) -> None:
    srv = start_server(peer.handle)
    _, headers = sign_request(derive_key(SECRET), ME, PEER, "POST", "/peer", b'{"a": 1}')
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    req = f"POST /peer HTTP/1.1\r\nHost: x\r\n{head}Content-Length: 8\r\n\r\n".encode()
    status, error = _raw(_port(srv), req + b'{"a": 2}')
    assert (status, error) == (401, "X-ESC-Peer-Body: does not match the body")
    assert peer.calls == []


def _closed_within(sock: socket.socket, seconds: float, trickle: bool) -> float | None:
    """Seconds until the server closed ``sock`` (None: still open after ``seconds``); with
    ``trickle``, one byte of a never-ending header is sent every 0.1 s meanwhile."""
    t0 = time.monotonic()
    sock.settimeout(0.1)
    if trickle:
        sock.sendall(b"GET /peer HTTP/1.1\r\nX-Filler: ")
    while time.monotonic() - t0 < seconds:
        try:
            if sock.recv(1) == b"":
                return time.monotonic() - t0
        except TimeoutError:
            pass
        except ConnectionResetError:
            return time.monotonic() - t0
        if trickle:
            try:
                sock.sendall(b"y")  # each byte well within the socket timeout
            except OSError:
                return time.monotonic() - t0
    return None


def test_an_idle_or_trickling_connection_is_cut(
    peer: Peer, start_server: Callable[..., Any]
) -> None:
    srv = start_server(peer.handle, io_timeout=0.3, deadline_s=1.0)
    with socket.create_connection(("127.0.0.1", _port(srv)), timeout=5) as idle:
        assert _closed_within(idle, 5.0, trickle=False) is not None  # the socket timeout
    with socket.create_connection(("127.0.0.1", _port(srv)), timeout=5) as slow:
        # a byte every 0.1 s never lets the 0.3 s socket timeout fire: the deadline cuts it
        assert _closed_within(slow, 5.0, trickle=True) is not None
    deadline = time.monotonic() + 2
    while srv.open_connections() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert srv.open_connections() == 0


def test_idle_connections_cannot_pile_up_threads(
    peer: Peer, start_server: Callable[..., Any]
) -> None:
    """300 idle connections: at most max_connections handler threads; the others are closed
    at once. Once they are gone the genuine peer is served again."""
    srv = start_server(peer.handle, max_connections=8, io_timeout=30.0, deadline_s=30.0)
    base = threading.active_count()
    socks: list[socket.socket] = []
    try:
        for i in range(300):
            s = socket.create_connection(("127.0.0.1", _port(srv)), timeout=5)
            socks.append(s)
            if i >= 8:
                assert s.recv(1) == b""  # closed at once (waited for: the backlog stays short)
        for s in socks[:8]:
            s.settimeout(0.05)
            with pytest.raises(TimeoutError):
                s.recv(1)  # held open: the admitted ones, idle
        assert threading.active_count() <= base + 8
        assert srv.open_connections() == 8
        p = poller(_port(srv))
        p.poll_once()
        assert not p.current().reachable  # every slot is taken
    finally:
        for s in socks:
            s.close()
    deadline = time.monotonic() + 5
    while srv.open_connections() and time.monotonic() < deadline:
        time.sleep(0.01)
    p.poll_once()
    assert p.current().reachable
    assert threading.active_count() <= base + 8


def test_an_oversized_answer_is_refused_by_the_client(
    impostor: Callable[..., _Impostor],
) -> None:
    p = poller(_port(impostor(lambda _h: (200, b" " * (MAX_BODY + 1), {}))))
    p.poll_once()
    assert not p.current().reachable and "refused" in str(p.problem)


class _Scripted(PeerPoller):
    """The real poller's bookkeeping over a scripted transport and clock."""

    def __init__(self) -> None:
        self.now = 0.0
        self.answer: dict[str, Any] | None = None
        super().__init__(
            "192.0.2.11", 7400, SECRET, interval=0.1, timeout=0.4, self_name=ME,
            peer_name=PEER, clock=lambda: self.now,
        )  # fmt: skip

    def fetch(self) -> tuple[dict[str, Any], PeerView]:
        if self.answer is None:
            raise DriverError("GET /peer: timed out")
        return self.answer, parse_view(self.answer, PEER)


def test_the_poller_sees_a_stuck_agent_and_keeps_the_last_mark_of_a_silent_primary() -> None:
    p = _Scripted()
    p.answer = {**a_view(outdated_lsn=700), "outdated": False, "cycle": 1}
    assert p.poll_once()
    p.now = 0.1
    p.answer = {**p.answer, "cycle": 2}
    assert not p.poll_once()  # only the cycle changed: nothing to wake the agent for
    assert p.current().agent_silent_for == 0.0
    for step in range(1, 6):  # the same cycle for 0.5 s: its agent is stuck in a call
        p.now = 0.1 + step / 10
        p.poll_once()
    assert p.current().agent_silent_for == pytest.approx(0.5)
    assert p.current().last_outdated_lsn == 700
    p.answer = None  # the primary dies
    p.poll_once()
    p.now += 1.0
    gone = p.current()
    assert not gone.reachable and gone.last_outdated_lsn == 700
    # An agent without the cycle counter (older) counts as always cycling.
    old = _Scripted()
    old.answer = a_view()
    old.poll_once()
    old.now = 0.3
    old.poll_once()
    assert old.current().agent_silent_for == 0.0 and not old.current().tells_outdated


def test_a_malformed_cycle_is_refused() -> None:
    with pytest.raises(DriverError, match="peer view: cycle"):
        parse_view({**a_view(), "cycle": "7"}, PEER)


def test_the_view_an_agent_publishes_is_the_view_its_peer_reads() -> None:
    db = DbStatus(DbRole.STANDBY, timeline=3, lsn=900, receive_lsn=1000, streaming=True)
    view = peer_view(
        node=PEER, state=NodeState.BACKUP, db=db, serving=False, vip_held=False,
        announced=False, outdated_lsn=None, outdated=True, handing_over=False,
        reason="standby", cycle=7, served_timeline=2,
    )  # fmt: skip
    got = parse_view(json.loads(json.dumps(view)), PEER)
    assert got.served_timeline == 2
    assert (got.state, got.db_role, got.timeline, got.lsn, got.receive_lsn) == (
        NodeState.BACKUP, DbRole.STANDBY, 3, 900, 1000,
    )  # fmt: skip
    assert got.streaming and got.outdated and got.tells_outdated and view["version"] == 1


@pytest.mark.parametrize(
    ("version", "says"), [(2, "newer than this agent reads"), ("1", "not a version"), (0, "not")]
)
def test_a_view_of_an_unknown_version_is_refused(version: object, says: str) -> None:
    with pytest.raises(DriverError, match=f"peer view: version: .*{says}"):
        parse_view({**a_view(), "version": version}, PEER)


def test_two_views_are_the_same_whatever_their_cycle() -> None:
    a = {**a_view(), "cycle": 1}
    assert same_view(a, {**a, "cycle": 2})
    assert not same_view(a, {**a, "lsn": 1})
    assert not same_view(a, {**a, "extra": None})
    assert same_view(None, None) and not same_view(a, None)


# --- mutual TLS (the pair CA) -------------------------------------------------------------------


@dataclass
class PairPki:
    """A pair CA in ``root/pair`` and each node's files as the agent keeps them."""

    root: Path

    def node(self, name: str, ips: list[str], ca_dir: str = "pair") -> PeerTls:
        ca = pki.create_ca(self.root / ca_dir)
        issued = pki.issue(ca, self.root / f"{ca_dir}-{name}", name, ips)
        return PeerTls(ca.cert, issued.cert, issued.key)


@pytest.fixture
def pair_pki(tmp_path: Path) -> PairPki:
    return PairPki(tmp_path)


def test_over_tls_the_genuine_peer_is_accepted(
    peer: Peer, start_server: Callable[..., Any], pair_pki: PairPki
) -> None:
    srv = start_server(peer.handle, tls=pair_pki.node(PEER, ["127.0.0.1"]))
    p = poller(_port(srv), tls=pair_pki.node(ME, ["127.0.0.2"]))
    assert p.poll_once() is True and p.problem is None
    assert p.current().reachable and p.current().timeline == 3
    # the same files serve the next connection, and a rotated certificate is picked up
    assert p.tls is not None
    first = p.tls.context(server=False)
    assert p.tls.context(server=False) is first
    pair_pki.node(ME, ["127.0.0.2"])  # issued again into the same files: a rotation
    p.poll_once()
    assert p.problem is None and p.tls.context(server=False) is not first


def test_over_tls_a_client_without_the_pairs_certificate_never_reaches_the_handler(
    peer: Peer, start_server: Callable[..., Any], pair_pki: PairPki
) -> None:
    srv = start_server(peer.handle, tls=pair_pki.node(PEER, ["127.0.0.1"]))
    # a client of another CA (it even trusts ours): refused in the handshake
    intruder = pair_pki.node("intruder", ["127.0.0.2"], ca_dir="other")
    mixed = PeerTls(pair_pki.node(PEER, ["127.0.0.1"]).ca, intruder.cert, intruder.key)
    p = poller(_port(srv), tls=mixed)
    p.poll_once()
    assert not p.current().reachable and p.problem is not None
    # a plain HTTP client: refused, nothing read
    plain = poller(_port(srv))
    plain.poll_once()
    assert not plain.current().reachable
    # a TLS client that presents no certificate at all
    ctx = ssl.create_default_context(cafile=str(mixed.ca))
    with (
        socket.create_connection(("127.0.0.1", _port(srv)), timeout=5) as raw,
        pytest.raises((ssl.SSLError, OSError)),
        ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s,
    ):
        s.sendall(b"GET /peer HTTP/1.1\r\nHost: x\r\n\r\n")
        if not s.recv(100):
            raise OSError("closed")
    assert peer.calls == []


def test_over_tls_an_impostor_with_another_certificate_is_never_asked(
    peer: Peer, start_server: Callable[..., Any], pair_pki: PairPki
) -> None:
    """A server at the peer's address with another CA's certificate, or the pair's but for
    another address: the poller refuses it in the handshake, before any request is sent (it
    even has the pair's secret here: no view is ever read from it)."""
    mine = pair_pki.node(ME, ["127.0.0.2"])
    for server_tls in (
        pair_pki.node("impostor", ["127.0.0.1"], ca_dir="other"),
        pair_pki.node(PEER, ["192.0.2.11"]),  # the pair's, but not for the address dialled
    ):
        srv = start_server(peer.handle, tls=server_tls)
        p = poller(_port(srv), tls=mine)
        p.poll_once()
        assert not p.current().reachable and p.problem is not None
        assert "certificate" in p.problem.lower() or "TLS" in p.problem, p.problem
    assert peer.calls == []
