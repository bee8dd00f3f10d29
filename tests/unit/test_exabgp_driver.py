"""The ExaBGP driver: its pure decisions (answers, command sequencing, re-announce, hang,
restart back-off) as tables, then the driver itself against ``fake_exabgp.py``, a stand-in for
the ``exabgp`` executable that runs our real API helper with real pipes and a real socket.

The real ExaBGP against a real BIRD is tests/integration/test_exabgp_driver.py.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import stat
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from esc.config.schema import BgpConfig, EscConfig, NodePaths
from esc.drivers.base import BgpStatus
from esc.drivers.exabgp import (
    ExabgpDriver,
    Sent,
    conf_path,
    due_command,
    is_hung,
    log_path,
    restart_delay,
    socket_path,
)
from esc.drivers.exabgp_api import bridge, is_forwardable, split_lines
from esc.drivers.exabgp_conf import (
    Answer,
    NeighborEvent,
    announce_command,
    exabgp_env,
    parse_answer,
    withdraw_command,
)
from esc.drivers.fake import FakeBgp
from esc.errors import BgpError, ConfigError

FAKE_EXABGP = Path(__file__).with_name("fake_exabgp.py")
BGP = BgpConfig.model_validate(
    {
        "local_ip": "192.0.2.10",
        "anycast_ip": "203.0.113.1",
        "remote_ip": "192.0.2.1",
        "local_as": 65010,
        "remote_as": 65001,
        "local_router_id": "192.0.2.10",
        "reannounce_s": 5.0,
    }
)
CFG = EscConfig(node_name="ha0", bgp=BGP)
ANNOUNCE = "announce route 203.0.113.1/32 next-hop self"
WITHDRAW = "withdraw route 203.0.113.1/32 next-hop self"


# --- ExaBGP's answers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "parsed"),
    [
        ("done", Answer(ok=True)),
        ("done\n", Answer(ok=True)),
        ("error", Answer(ok=False)),
        ("neighbor 192.0.2.1 up", NeighborEvent("192.0.2.1", "up")),
        ("neighbor 192.0.2.1 connected", NeighborEvent("192.0.2.1", "connected")),
        ("neighbor 2001:db8::1 down - peer reset", NeighborEvent("2001:db8::1", "down")),
        ("neighbor 192.0.2.1 in notification code 6 subcode 2 data ", None),
        ("shutdown 4242 4241", None),
        ("", None),
        ("done and more", None),
        ("doneerror", None),
    ],
)
def test_parse_answer(line: str, parsed: Answer | NeighborEvent | None) -> None:
    assert parse_answer(line) == parsed


# --- what to send, and when ---------------------------------------------------------------------


def _sent(kind: str, at: float, ok: bool | None) -> Sent:
    return Sent(1, "announce" if kind == "a" else "withdraw", at, ok)


@pytest.mark.parametrize(
    ("want", "last", "now", "expected", "why"),
    [
        (False, None, 0.0, "withdraw", "new connection, withdrawn: say so (ExaBGP may hold it)"),
        (True, None, 0.0, "announce", "new connection, announced"),
        (True, _sent("w", 0.0, True), 0.1, "announce", "became MASTER: announce at once"),
        (False, _sent("a", 0.0, True), 0.1, "withdraw", "left MASTER: withdraw at once"),
        (False, _sent("a", 0.0, None), 0.1, "withdraw", "a change never waits for an answer"),
        (True, _sent("a", 0.0, None), 0.1, None, "unanswered: wait for the answer"),
        (True, _sent("a", 0.0, None), 60.0, None, "long unanswered is a hang, not a resend"),
        (True, _sent("a", 0.0, True), 4.9, None, "announced and answered: nothing to do"),
        (True, _sent("a", 0.0, True), 5.0, "announce", "re-announce every reannounce_s"),
        (False, _sent("w", 0.0, True), 500.0, None, "a withdrawal is never repeated"),
        (True, _sent("a", 0.0, False), 0.5, None, "error: retry, but not at once"),
        (True, _sent("a", 0.0, False), 1.0, "announce", "error: retry after retry_s"),
        (False, _sent("w", 0.0, False), 1.0, "withdraw", "a failed withdrawal is retried"),
    ],
)
def test_due_command(
    want: bool, last: Sent | None, now: float, expected: str | None, why: str
) -> None:
    assert due_command(want, last, now, reannounce_s=5.0, retry_s=1.0) == expected, why


def test_is_hung() -> None:
    assert not is_hung(None, 100.0, 2.0)
    assert not is_hung(10.0, 11.9, 2.0)
    assert is_hung(10.0, 12.0, 2.0)


def test_restart_backoff() -> None:
    assert [restart_delay(n) for n in range(8)] == [0, 1, 2, 4, 8, 16, 30, 30]


# --- environment and helper -------------------------------------------------------------------


def test_environment_turns_off_what_debian_turns_on() -> None:
    env = exabgp_env("exabgp")
    assert env["exabgp_daemon_user"] == "exabgp"
    assert env["exabgp_daemon_drop"] == "false"
    assert env["exabgp_daemon_daemonize"] == "false"
    assert env["exabgp_api_ack"] == "true"
    assert env["exabgp_api_cli"] == "false"
    assert env["exabgp_tcp_bind"] == ""
    assert env["exabgp_log_destination"] == "stdout"  # exabgp.log, opened by the driver
    assert all(k.startswith("exabgp_") and "." not in k for k in env)
    with pytest.raises(ConfigError):
        exabgp_env("exabgp\nx")


@pytest.mark.parametrize(
    ("line", "ok"),
    [
        (ANNOUNCE.encode(), True),
        (b"", False),
        (b"announce route 203.0.113.1/32\rwithdraw", False),
        (b"announce\x00", False),
        ("announce é".encode(), False),
        (b"a" * 1025, False),
    ],
)
def test_helper_forwards_only_printable_single_lines(line: bytes, ok: bool) -> None:
    assert is_forwardable(line) is ok


def test_split_lines_keeps_the_unfinished_rest() -> None:
    assert split_lines(b"a\nb\nc") == ([b"a", b"b"], b"c")
    assert split_lines(b"a\n") == ([b"a"], b"")
    assert split_lines(b"") == ([], b"")


def test_helper_bridges_both_ways_and_refuses_control_characters() -> None:
    """The helper's loop with real pipes and a socket pair: what ExaBGP would see."""
    driver, helper_end = socket.socketpair()
    exa_in_r, exa_in_w = os.pipe()  # ExaBGP -> helper stdin
    exa_out_r, exa_out_w = os.pipe()  # helper stdout -> ExaBGP
    result: list[str] = []
    t = threading.Thread(target=lambda: result.append(bridge(helper_end, exa_in_r, exa_out_w)))
    t.start()
    try:
        driver.sendall(b"announce route 203.0.113.1/32 next-hop self\nbad\x07line\nwith")
        driver.sendall(b"draw route 203.0.113.1/32 next-hop self\n")
        got = b""
        while got.count(b"\n") < 2:
            got += os.read(exa_out_r, 4096)
        assert got == f"{ANNOUNCE}\n{WITHDRAW}\n".encode()
        os.write(exa_in_w, b"done\n")
        assert driver.recv(100) == b"done\n"
        os.close(exa_in_w)  # ExaBGP died
        t.join(5)
        assert result == ["exabgp"]
    finally:
        for fd in (exa_in_r, exa_out_r, exa_out_w):
            os.close(fd)
        driver.close()
        helper_end.close()


# --- the driver against fake_exabgp.py -------------------------------------------------------


@pytest.fixture
def paths() -> Iterator[NodePaths]:
    # Short: a unix socket path has at most 107 bytes, pytest's tmp_path can be longer.
    root = Path(tempfile.mkdtemp(prefix="esc-bgp-", dir="/tmp"))
    try:
        yield NodePaths(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _driver(
    paths: NodePaths, *args: str, hang_s: float = 2.0, ack_timeout_s: float = 0.15
) -> ExabgpDriver:
    return ExabgpDriver(
        CFG,
        paths,
        exabgp_argv=[sys.executable, str(FAKE_EXABGP), *args],
        run_as=None,
        hang_s=hang_s,
        ack_timeout_s=ack_timeout_s,
    )


def until(drv: ExabgpDriver, check: Callable[[BgpStatus], bool], timeout: float = 10.0) -> None:
    """Tick like the agent (every 20 ms) until ``check(status)``; a deadline, not a sleep."""
    deadline = time.monotonic() + timeout
    while not check(drv.status()):
        assert time.monotonic() < deadline, f"timed out; status {drv.status()}"
        drv.tick()
        time.sleep(0.02)


def commands(paths: NodePaths) -> list[str]:
    f = conf_path(paths).with_name("exabgp.conf.commands")
    return f.read_text().splitlines() if f.exists() else []


def test_driver_announces_withdraws_and_stops(paths: NodePaths) -> None:
    drv = _driver(paths)
    try:
        drv.start()
        assert conf_path(paths).exists() and socket_path(paths).exists()
        assert f"-m esc.drivers.exabgp_api {socket_path(paths)};" in conf_path(paths).read_text()
        # Withdrawn on start, and said so on the new connection.
        until(drv, lambda s: s.connected and s.acked and s.session == "up")
        assert commands(paths) == [WITHDRAW]
        assert not drv.status().announced

        drv.set_announced(True)
        until(drv, lambda s: s.acked)  # normally at once (in the call); later on a loaded box
        st = drv.status()
        assert st.announced and st.last_error is None, st
        drv.set_announced(True)  # idempotent: nothing sent
        drv.tick()
        assert commands(paths) == [WITHDRAW, ANNOUNCE]

        drv.set_announced(False)
        until(drv, lambda s: s.acked)
        assert not drv.status().announced
        assert commands(paths) == [WITHDRAW, ANNOUNCE, WITHDRAW]

        pid = drv.status().pid
        assert pid is not None
        drv.stop()
        st = drv.status()
        assert not st.running and not st.connected and st.pid is None
        assert not socket_path(paths).exists()
        assert not Path(f"/proc/{pid}").exists() or "Z" in _proc_state(pid)
    finally:
        drv.stop()
    assert log_path(paths).exists()  # stdout/stderr of ExaBGP (and of the helper) go there


def _proc_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return ""


def test_driver_reannounces_periodically(paths: NodePaths) -> None:
    now = [1000.0]
    drv = ExabgpDriver(
        CFG,
        paths,
        exabgp_argv=[sys.executable, str(FAKE_EXABGP)],
        run_as=None,
        clock=lambda: now[0],
    )
    try:
        drv.start()
        until(drv, lambda s: s.connected and s.acked)
        drv.set_announced(True)
        until(drv, lambda s: s.acked)
        now[0] += 4.0
        drv.tick()
        assert commands(paths).count(ANNOUNCE) == 1
        now[0] += 1.0
        drv.tick()  # reannounce_s passed: sent without waiting; the answer comes later
        until(drv, lambda s: s.acked)
        assert commands(paths).count(ANNOUNCE) == 2
    finally:
        drv.stop()


def test_driver_restarts_a_killed_exabgp_and_announces_again(paths: NodePaths) -> None:
    drv = _driver(paths)
    try:
        drv.start()
        until(drv, lambda s: s.connected and s.acked)
        drv.set_announced(True)
        pid = drv.status().pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        until(drv, lambda s: s.restarts == 1 and s.connected and s.acked)
        st = drv.status()
        assert st.pid != pid and st.announced and st.running
        # The new ExaBGP got the wish: announced, not a withdraw first.
        assert commands(paths)[-1] == ANNOUNCE
    finally:
        drv.stop()


def test_driver_kills_a_hung_exabgp(paths: NodePaths) -> None:
    drv = _driver(paths, hang_s=0.5)
    try:
        drv.start()
        until(drv, lambda s: s.connected and s.acked)
        drv.set_announced(True)
        pid = drv.status().pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)  # paused: the session would only drop at the hold timer
        drv.set_announced(False)
        st = drv.status()
        assert not st.acked and st.last_error is not None and "no answer" in st.last_error
        until(drv, lambda s: s.restarts == 1 and s.connected and s.acked, timeout=15)
        assert not drv.status().announced
        assert commands(paths)[-1] == WITHDRAW
        assert not Path(f"/proc/{pid}").exists() or _proc_state(pid) == "Z"
    finally:
        drv.stop()


def test_driver_records_a_silent_exabgp_without_blocking(paths: NodePaths) -> None:
    # A long ack timeout, so "waited for the answer" and "did not wait" are far apart in time
    # even on a loaded machine.
    drv = _driver(paths, "--silent", hang_s=60, ack_timeout_s=1.0)
    try:
        drv.start()
        until(drv, lambda s: s.connected and s.session == "up")
        t0 = time.monotonic()
        drv.set_announced(True)
        assert time.monotonic() - t0 >= 0.95  # gave the answer its whole timeout, then went on
        st = drv.status()
        assert st.announced and not st.acked
        assert st.last_error == "no answer from ExaBGP to announce within 1.00 s"
        t0 = time.monotonic()
        drv.tick()
        assert time.monotonic() - t0 < 0.5  # tick does not wait for the answer (1 s)
    finally:
        drv.stop()


def test_announce_before_the_helper_connects_is_sent_when_it_does(paths: NodePaths) -> None:
    drv = _driver(paths)
    try:
        drv.start()
        drv.set_announced(True)  # ExaBGP is still starting
        assert drv.status().announced
        until(drv, lambda s: s.connected and s.acked)
        assert commands(paths) == [ANNOUNCE]
    finally:
        drv.stop()


def test_start_refuses_what_cannot_work(paths: NodePaths) -> None:
    with pytest.raises(ConfigError):
        ExabgpDriver(EscConfig(), paths)  # no [bgp] section
    missing = ExabgpDriver(CFG, paths, exabgp_argv=["no-such-exabgp-binary"], run_as=None)
    with pytest.raises(BgpError, match="not found"):
        missing.start()
    missing.stop()
    deep = NodePaths(paths.root / ("x" * 100))
    with pytest.raises(BgpError, match="too long"):
        ExabgpDriver(CFG, deep, exabgp_argv=[sys.executable, str(FAKE_EXABGP)], run_as=None).start()


@pytest.mark.skipif(os.geteuid() != 0, reason="changing user needs root")
def test_exabgp_runs_as_its_own_unprivileged_user(paths: NodePaths) -> None:
    pw = pwd.getpwnam("exabgp")
    drv = ExabgpDriver(CFG, paths, exabgp_argv=[sys.executable, str(FAKE_EXABGP)])
    os.chmod(paths.root, 0o700)  # a directory the user cannot enter: refused, naming it
    with pytest.raises(BgpError, match=f"{paths.root} is not searchable by the exabgp user"):
        drv.start()
    os.chmod(paths.root, 0o755)
    conf_path(paths).parent.mkdir(parents=True)
    os.chown(conf_path(paths).parent, pw.pw_uid, -1)  # where the fake writes what it got
    try:
        drv.start()
        until(drv, lambda s: s.connected and s.acked)
        pid = drv.status().pid
        assert pid is not None
        uids = Path(f"/proc/{pid}/status").read_text().split("Uid:")[1].split()[:4]
        assert uids == [str(pw.pw_uid)] * 4  # real, effective, saved, filesystem
        groups = Path(f"/proc/{pid}/status").read_text().split("Groups:")[1].split("\n")[0]
        assert groups.strip() == ""  # no supplementary group kept from root
        conf = conf_path(paths).stat()
        assert (conf.st_uid, stat.S_IMODE(conf.st_mode)) == (pw.pw_uid, 0o600)
    finally:
        drv.stop()


def test_commands_come_from_the_renderer() -> None:
    assert announce_command(CFG) == ANNOUNCE
    assert withdraw_command(CFG) == WITHDRAW


# --- the fake, as the agent's unit tests will use it ------------------------------------------


def test_fake_bgp_follows_the_driver_contract() -> None:
    bgp = FakeBgp()
    bgp.start()
    assert bgp.status() == BgpStatus(True, True, False, False, session="up")
    bgp.set_announced(True)
    assert bgp.routed and bgp.status().acked
    bgp.set_announced(True)
    assert bgp.sent == ["announce"]
    bgp.crash()
    assert not bgp.routed and not bgp.status().running
    bgp.tick()
    assert bgp.routed and bgp.status().restarts == 1
    bgp.answering = False
    bgp.set_announced(False)
    assert bgp.routed and not bgp.status().acked and bgp.status().last_error
    bgp.answering = True
    bgp.tick()
    assert not bgp.routed and bgp.status().acked
    bgp.stop()
    assert not bgp.status().running
    bgp.fail["start"] = BgpError("exabgp not found")
    with pytest.raises(BgpError):
        bgp.start()
