"""sd_notify: the agent's messages to systemd, received on a real AF_UNIX datagram socket, and
the loop's hooks (READY once, STATUS on change, STOPPING)."""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from esc.agent.history import History
from esc.agent.loop import Agent
from esc.agent.systemd import Notifier, socket_address, state_line
from esc.config.schema import NodePaths, parse_config
from esc.core.facts import DecideConfig
from esc.model import (
    DbRole,
    DbStatus,
    Decision,
    Memory,
    NodeState,
    Observation,
    PeerView,
    ServiceView,
    VrrpState,
)


@pytest.fixture
def receiver() -> Iterator[tuple[str, socket.socket]]:
    """systemd's end: a datagram socket bound in a short tmp dir (sun_path is 108 bytes)."""
    with tempfile.TemporaryDirectory(prefix="sdn", dir="/tmp") as d:
        path = os.path.join(d, "notify")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        sock.settimeout(2)
        try:
            yield path, sock
        finally:
            sock.close()


def _pending(sock: socket.socket) -> list[str]:
    """Every datagram waiting on ``sock``, decoded."""
    out: list[str] = []
    sock.setblocking(False)
    try:
        while True:
            out.append(sock.recv(4096).decode())
    except BlockingIOError:
        return out
    finally:
        sock.settimeout(2)


def test_notify_socket_addresses() -> None:
    assert socket_address("/run/systemd/notify") == "/run/systemd/notify"
    assert socket_address("@abstract/notify") == "\0abstract/notify"
    assert socket_address("@") is None
    assert socket_address("vsock:2:1234") is None
    assert socket_address("relative") is None


def test_no_notify_socket_is_a_no_op() -> None:
    env = {"PATH": "/bin"}
    n = Notifier.from_env(env)
    assert not n.enabled
    assert n.ready("MASTER: x") is False
    assert n.status("BACKUP: y") is False
    assert n.watchdog() is False
    assert n.stopping() is False


def test_from_env_takes_the_variables_out_so_children_do_not_inherit_them(
    receiver: tuple[str, socket.socket],
) -> None:
    path, _ = receiver
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "600000000", "WATCHDOG_PID": "1", "X": "1"}
    n = Notifier.from_env(env)
    assert n.enabled and n.address == path
    assert env == {"X": "1"}


def test_ready_status_watchdog_stopping_reach_the_socket(
    receiver: tuple[str, socket.socket],
) -> None:
    path, sock = receiver
    now = [100.0]
    n = Notifier(path, clock=lambda: now[0])
    assert n.ready("SWITCHING: cold boot: waiting for peer esc-ha-1")
    assert sock.recv(4096) == b"READY=1\nSTATUS=SWITCHING: cold boot: waiting for peer esc-ha-1"
    assert n.ready("SWITCHING: cold boot: waiting for peer esc-ha-1") is False  # READY once
    assert n.status("MASTER: serving as primary")
    assert n.status("MASTER: serving as primary") is False  # unchanged: nothing sent
    assert n.status("MASTER: a\nb")  # one assignment per line: newlines are flattened
    assert n.watchdog()
    assert n.watchdog() is False  # throttled within the second
    now[0] += 1.5
    assert n.watchdog()
    assert n.stopping("STOP: agent stopping")
    assert _pending(sock) == [
        "STATUS=MASTER: serving as primary",
        "STATUS=MASTER: a b",
        "WATCHDOG=1",
        "WATCHDOG=1",
        "STOPPING=1\nSTATUS=STOP: agent stopping",
    ]
    n.close()


def test_abstract_notify_socket() -> None:
    name = f"esc-test-notify-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(2)
    try:
        n = Notifier.from_env({"NOTIFY_SOCKET": "@" + name})
        assert n.ready("BACKUP: standby")
        assert sock.recv(4096) == b"READY=1\nSTATUS=BACKUP: standby"
    finally:
        sock.close()


def test_a_vanished_socket_never_raises(tmp_path: Path) -> None:
    n = Notifier(str(tmp_path / "gone"))
    assert n.ready("MASTER: x") is False
    assert n.status("BACKUP: y") is False


# --- the loop's hooks -----------------------------------------------------------------------


class _Unused:
    """A driver the tested path never calls."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"unexpected driver call: {name}")


def _agent(tmp_path: Path, notifier: Notifier) -> Agent:
    cfg = parse_config(
        {
            "ha": {
                "ha_node_list": ["192.0.2.10", "192.0.2.11"],
                "kad_vip": "192.0.2.100",
                "kad_vif": "eth0",
            }
        }
    )
    u: Any = _Unused()
    agent = Agent(
        cfg=cfg,
        paths=NodePaths(tmp_path),
        dcfg=DecideConfig(node_name="esc-ha-0", peer_name="esc-ha-1", first_node=True),
        peer_host="192.0.2.11",
        vrrp=u,
        vip=u,
        db=u,
        service=u,
        peer=u,
        gateway=None,
        history=History(tmp_path / "history.jsonl"),
    )
    agent.notifier = notifier
    return agent


def _obs() -> Observation:
    return Observation(
        now=1.0,
        vrrp=VrrpState.BACKUP,
        vip_held=False,
        db=DbStatus(DbRole.STANDBY),
        service=ServiceView(False, True),
        peer=PeerView(False),
    )


def _decision(state: NodeState, reason: str) -> Decision:
    return Decision(state, (), reason, Memory(state=state))


def test_loop_reports_ready_then_each_changed_state_line(
    tmp_path: Path, receiver: tuple[str, socket.socket]
) -> None:
    path, sock = receiver
    agent = _agent(tmp_path, Notifier(path))
    agent._record(_obs(), _decision(NodeState.SWITCHING, "cold boot: waiting for peer esc-ha-1"))
    agent._record(_obs(), _decision(NodeState.SWITCHING, "cold boot: waiting for peer esc-ha-1"))
    agent._record(_obs(), _decision(NodeState.BACKUP, "standby: streaming from esc-ha-1"))
    agent._record(_obs(), _decision(NodeState.BACKUP, "standby: streaming from esc-ha-1"))
    assert _pending(sock) == [
        "READY=1\nSTATUS=SWITCHING: cold boot: waiting for peer esc-ha-1",
        "STATUS=BACKUP: standby: streaming from esc-ha-1",
    ]
    assert (tmp_path / "run/esc/keepalived_state").read_text() == "BACKUP\n"


def test_state_line() -> None:
    assert state_line("MASTER", "serving as primary") == "MASTER: serving as primary"
    assert state_line("STOP", "") == "STOP"
