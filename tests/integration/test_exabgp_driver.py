"""The ExaBGP driver with the real ExaBGP 4.2 against a real BIRD 2, in namespaces of its own.

Two namespaces, named after this process (``esc-bgpt-<pid>`` for the node, ``esc-bgpt-<pid>-r``
for the router) and joined by one veth pair in 192.0.2.0/24: BIRD refuses a BGP neighbor or next
hop that is one of its own addresses, so node and router cannot share one namespace. Only this
module's processes are stopped, by PID, and the namespaces are deleted in the fixture teardown.

The driver runs in its own process (``exabgp_host.py``) inside the node namespace, as it would in
the agent, so that killing that owner with SIGKILL shows what the router sees when the agent dies.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from labutil import eventually

pytestmark = pytest.mark.integration

HOST_SCRIPT = Path(__file__).with_name("exabgp_host.py")
NODE_IP, ROUTER_IP, ANYCAST = "192.0.2.10", "192.0.2.1", "203.0.113.1"
PREFIX = f"{ANYCAST}/32"
BGP = {
    "local_ip": NODE_IP,
    "anycast_ip": ANYCAST,
    "remote_ip": ROUTER_IP,
    "local_as": 65010,
    "remote_as": 65001,
    "local_router_id": NODE_IP,
    "hold_time": 9,
    "reannounce_s": 5.0,
}
BIRD_CONF = f"""\
log stderr all;
router id {ROUTER_IP};
protocol device {{ }}
protocol bgp ha0 {{
    local {ROUTER_IP} as 65001;
    neighbor {NODE_IP} as 65010;
    hold time 9;
    ipv4 {{ import all; export none; }};
}}
"""
TOOLS = ("ip", "bird", "birdc", "exabgp", "setpriv")


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, text=True, timeout=20)


def _alive(pid: int) -> bool:
    """True if ``pid`` runs (a zombie waiting for PID 1 to reap it is dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _pids_with(text: str) -> list[int]:
    """Live processes whose command line mentions ``text`` (our unique socket path)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline and _alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def _stop(proc: subprocess.Popen[Any] | None, pid: int | None = None) -> None:
    """Stop one process we started, by PID."""
    if proc is not None:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
    elif pid is not None and _alive(pid):
        os.kill(pid, signal.SIGKILL)


@dataclass
class Bed:
    node: str
    router: str
    root: Path
    bird_sock: Path
    bird: subprocess.Popen[bytes] | None = None
    host: subprocess.Popen[str] | None = None
    exabgp_pids: set[int] = field(default_factory=set)

    def routes(self) -> str:
        out = subprocess.run(
            ["birdc", "-s", str(self.bird_sock), "show", "route", PREFIX],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        return out.stdout

    def has_route(self) -> bool:
        return f"{PREFIX} " in self.routes()

    def session_up(self) -> bool:
        out = subprocess.run(
            ["birdc", "-s", str(self.bird_sock), "show", "protocols", "ha0"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout
        return "Established" in out

    def start_host(self) -> None:
        self.host = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                self.node,
                sys.executable,
                str(HOST_SCRIPT),
                str(self.root / "node"),
                json.dumps(BGP),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def ask(self, cmd: str) -> dict[str, Any]:
        assert self.host is not None and self.host.stdin and self.host.stdout
        self.host.stdin.write(cmd + "\n")
        self.host.stdin.flush()
        answer: dict[str, Any] = json.loads(self.host.stdout.readline())
        if answer.get("pid"):
            self.exabgp_pids.add(answer["pid"])
        return answer


def acked(bed: Bed) -> dict[str, Any]:
    """The driver's status once ExaBGP has answered ``done`` to the current wish (an answer
    later than ``ack_timeout_s``, on a loaded machine, is taken by the next tick)."""
    st: dict[str, Any] = eventually(
        lambda: (s := bed.ask("status"))["acked"] and s, 10, 0.01, "ExaBGP's answer"
    )
    assert st["last_error"] is None, st
    return st


@pytest.fixture
def bed() -> Iterator[Bed]:
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces)")
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)}")
    node = f"esc-bgpt-{os.getpid()}"
    root = Path(tempfile.mkdtemp(prefix=f"{node}-", dir="/tmp"))  # short: unix socket paths
    root.chmod(0o755)  # ExaBGP runs as the exabgp user: it must reach <run>
    b = Bed(node, f"{node}-r", root, root / "bird.ctl")
    made: list[str] = []
    try:
        for ns in (b.node, b.router):
            _run("ip", "netns", "add", ns)
            made.append(ns)
            _run("ip", "-n", ns, "link", "set", "lo", "up")
        veth = ("link", "add", "eth0", "type", "veth", "peer", "eth0", "netns", b.router)
        _run("ip", "-n", b.node, *veth)
        for ns, addr in ((b.node, NODE_IP), (b.router, ROUTER_IP)):
            _run("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", "eth0")
            _run("ip", "-n", ns, "link", "set", "eth0", "up")
        (root / "bird.conf").write_text(BIRD_CONF)
        with open(root / "bird.log", "wb") as out:
            bird = ("bird", "-f", "-c", str(root / "bird.conf"), "-s", str(b.bird_sock))
            b.bird = subprocess.Popen(
                ["ip", "netns", "exec", b.router, *bird, "-P", str(root / "bird.pid")],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        eventually(lambda: "Network not found" in b.routes(), 10, 0.05, "BIRD answering")
        yield b
    finally:
        for log in (root / "node/var/log/esc/exabgp.log", root / "bird.log"):
            if log.exists():  # shown by pytest only when the test failed
                print(f"--- {log.name}\n{log.read_text()[-6000:]}")
        _stop(b.host)
        for pid in b.exabgp_pids:
            _stop(None, pid)
        for pid in _pids_with(str(root)):  # an orphaned API helper, if the test failed
            _stop(None, pid)
        _stop(b.bird)
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], check=False, timeout=20)
        shutil.rmtree(root, ignore_errors=True)


def test_announce_withdraw_and_owner_killed(bed: Bed) -> None:
    t_start = time.monotonic()
    bed.start_host()
    up = eventually(
        lambda: (s := bed.ask("status"))["connected"] and s["acked"] and s["session"] == "up",
        15,
        0.05,
        "ExaBGP connected, session up",
    )
    assert up
    eventually(bed.session_up, 10, 0.01, "BIRD: session Established")  # a few ms after ExaBGP
    assert not bed.has_route()  # withdrawn on start
    print(f"\nExaBGP start to session up: {time.monotonic() - t_start:.2f} s")

    # Announce: acknowledged (normally within the call: ``took``), then in BIRD's table.
    t0 = time.monotonic()
    st = bed.ask("announce")
    assert st["announced"], st
    eventually(bed.has_route, 10, 0.005, f"{PREFIX} in BIRD")
    seen = time.monotonic() - t0
    acked(bed)
    assert "AS65010" in bed.routes()
    print(f"announce: acked in {st['took'] * 1000:.1f} ms, in BIRD after {seen * 1000:.1f} ms")

    t0 = time.monotonic()
    st = bed.ask("withdraw")
    assert not st["announced"], st
    eventually(lambda: not bed.has_route(), 10, 0.005, f"{PREFIX} gone from BIRD")
    seen = time.monotonic() - t0
    acked(bed)
    print(
        f"withdraw: acked in {st['took'] * 1000:.1f} ms, gone from BIRD after {seen * 1000:.1f} ms"
    )

    st = bed.ask("announce")
    eventually(bed.has_route, 10, 0.005, f"{PREFIX} in BIRD again")
    acked(bed)
    exabgp_pid = st["pid"]
    assert bed.host is not None
    children = set(_pids_with(str(bed.root / "node"))) - {bed.host.pid}
    assert exabgp_pid in children and len(children) == 2, children  # ExaBGP and its API helper
    assert Path(f"/proc/{exabgp_pid}/comm").read_text().strip() == "exabgp"  # lab faults' name

    # The owner (the agent) is SIGKILLed: ExaBGP dies with it, the router drops the route.
    t0 = time.monotonic()
    os.kill(bed.host.pid, signal.SIGKILL)
    eventually(lambda: not bed.has_route(), 10, 0.005, f"{PREFIX} gone after the owner's kill")
    seen = time.monotonic() - t0
    print(f"owner SIGKILLed: route gone from BIRD after {seen * 1000:.1f} ms")
    bed.host.wait(10)
    eventually(lambda: not _alive(exabgp_pid), 10, 0.01, "ExaBGP dead")
    eventually(lambda: not _pids_with(str(bed.root / "node")), 10, 0.01, "no orphaned helper")
    assert not bed.session_up()


def test_dead_helper_or_exabgp_heals(bed: Bed) -> None:
    """ExaBGP respawns a dead API helper (the route stays); the driver restarts a dead ExaBGP
    at its next tick and announces again (the lab's ``fault kill HOST exabgp``)."""
    bed.start_host()
    eventually(
        lambda: (s := bed.ask("status"))["connected"] and s["session"] == "up",
        15,
        0.05,
        "ExaBGP connected, session up",
    )
    st = bed.ask("announce")
    eventually(bed.has_route, 10, 0.005, f"{PREFIX} in BIRD")
    acked(bed)
    assert bed.host is not None
    exabgp_pid = st["pid"]

    def helpers() -> set[int]:
        assert bed.host is not None
        return set(_pids_with(str(bed.root / "node"))) - {bed.host.pid, exabgp_pid}

    def announces_received() -> int:
        log = bed.root / "node/var/log/esc/exabgp.log"
        return log.read_text().count(f"route added to neighbor {ROUTER_IP} ")

    assert announces_received() == 1
    old = helpers()
    assert len(old) == 1, old
    os.kill(old.pop(), signal.SIGKILL)
    # The driver's status can still show the old connection for one tick; what proves the
    # reconnection is ExaBGP getting the wish again, from the helper it respawned.
    eventually(
        lambda: helpers() and announces_received() == 2 and bed.ask("status")["acked"],
        15,
        0.02,
        "a new helper connected and the wish re-sent",
    )
    st = bed.ask("status")
    assert st["pid"] == exabgp_pid and st["restarts"] == 0 and st["connected"], st
    assert bed.has_route()

    t0 = time.monotonic()
    os.kill(exabgp_pid, signal.SIGKILL)
    eventually(lambda: not bed.has_route(), 10, 0.005, f"{PREFIX} gone with ExaBGP")
    eventually(
        lambda: (s := bed.ask("status"))["restarts"] == 1 and s["acked"],
        15,
        0.02,
        "ExaBGP restarted and the route announced again",
    )
    eventually(bed.has_route, 15, 0.01, f"{PREFIX} back in BIRD")
    print(f"\nExaBGP killed: route back in BIRD after {time.monotonic() - t0:.2f} s")
    st = bed.ask("status")
    assert st["pid"] != exabgp_pid and st["announced"] and st["running"], st
    bed.exabgp_pids.add(st["pid"])
