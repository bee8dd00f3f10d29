"""The lab itself: up/down leave nothing behind, topologies connect as drawn, faults bite."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from labutil import eventually, in_host, lab_fixture, leftovers, pings

from esc.drivers.proc import pid_is_live
from esc.errors import LabError
from esclab import faults
from esclab.lab import Lab, ns_pids

pytestmark = pytest.mark.integration


@pytest.fixture
def fresh() -> Iterator[Lab]:
    lab = Lab()
    lab.down()
    try:
        yield lab
    finally:
        lab.down()


@pytest.fixture(scope="module")
def single(request: pytest.FixtureRequest) -> Iterator[Lab]:
    yield from lab_fixture(request, kind="single")


def test_up_then_down_leaves_nothing(fresh: Lab) -> None:
    res = fresh.up("single")
    assert res.created
    assert fresh.is_running()
    bird = fresh.read_state()["pids"]["bird"]
    assert pid_is_live(bird)
    fresh.down()
    assert leftovers(fresh) == []
    assert not pid_is_live(bird)


@pytest.mark.parametrize("step", ["namespaces", "links", "nodes", "router", "agents"])
def test_failed_up_cleans_up(fresh: Lab, step: str) -> None:
    with pytest.raises(LabError, match=step):
        Lab(fail_at=step).up("multi")
    assert leftovers(fresh) == []


def test_up_twice_reports_running_and_stale_lab_is_cleaned(fresh: Lab) -> None:
    assert fresh.up("single").created
    again = fresh.up("single")
    assert not again.created
    # A killed run leaves namespaces and files with no live process: the next up cleans it.
    for pid in ns_pids("router"):
        os.kill(pid, signal.SIGKILL)
    eventually(lambda: not fresh.is_running(), what="lab to look stale")
    assert fresh.status()["stale"]
    res = fresh.up("single")
    assert res.created and res.cleaned_stale
    assert fresh.is_running()


def test_multi_topology_reachability(fresh: Lab) -> None:
    fresh.up("multi")
    assert pings("esc-ha-0", "192.0.2.11")  # sync
    assert pings("esc-ha-1", "203.0.113.10")  # mgmt
    assert pings("esc-ha-0", "198.51.100.50")  # nb on northbound
    assert pings("nb", "2001:db8:100::11")
    assert pings("nb", "198.51.100.1")
    assert not pings("nb", "192.0.2.10")  # nb cannot reach the sync network
    assert not pings("nb", "203.0.113.10")
    st = fresh.status()
    assert set(st["hosts"]) == {"esc-ha-0", "esc-ha-1", "nb", "router", "witness"}
    assert pings("witness", "192.0.2.10")  # the witness: on the sync network only
    assert not pings("witness", "198.51.100.1")
    assert "192.0.2.10/24" in st["hosts"]["esc-ha-0"]["interfaces"]["eth1"]


def _raw_vrrp_arrives(sender: str, receiver: str, dest: str) -> bool:
    """Send one IP protocol 112 packet and see whether a raw socket on the receiver gets it."""
    recv = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            receiver,
            "python3",
            "-c",
            "import socket; s=socket.socket(socket.AF_INET,socket.SOCK_RAW,112); s.settimeout(3);"
            "\ntry:\n s.recvfrom(100); print('got')\nexcept TimeoutError: print('none')",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        for _ in range(10):  # the receiver may not be bound yet: send a few
            in_host(
                sender,
                "python3",
                "-c",
                f"import socket; socket.socket(socket.AF_INET,socket.SOCK_RAW,112)"
                f".sendto(b'x'*20, ('{dest}', 0))",
            )
        out, _ = recv.communicate(timeout=10)
    finally:
        recv.kill()
    return out.strip() == "got"


def _tcp_connects(host: str, addr: str, port: int) -> bool:
    return (
        in_host(
            host,
            "python3",
            "-c",
            f"import socket; socket.create_connection(('{addr}', {port}), timeout=2)",
        ).returncode
        == 0
    )


@pytest.fixture
def listener_5432(single: Lab) -> Iterator[None]:
    proc = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            "esc-ha-1",
            "python3",
            "-c",
            "import socket,time; s=socket.create_server(('0.0.0.0',5432)); s.listen();"
            "\nwhile True: c,_=s.accept(); c.close()",
        ],
    )
    try:
        eventually(lambda: _tcp_connects("esc-ha-0", "192.0.2.11", 5432), what="listener")
        yield
    finally:
        proc.kill()
        proc.wait()


def test_partition_vrrp_only_keeps_database_port(single: Lab, listener_5432: None) -> None:
    assert _raw_vrrp_arrives("esc-ha-0", "esc-ha-1", "192.0.2.11")
    faults.partition(single, "sync", "vrrp")
    try:
        assert not _raw_vrrp_arrives("esc-ha-0", "esc-ha-1", "192.0.2.11")
        assert _tcp_connects("esc-ha-0", "192.0.2.11", 5432)
        faults.partition(single, "sync", "db")
        assert not _tcp_connects("esc-ha-0", "192.0.2.11", 5432)
    finally:
        faults.heal(single)
    assert _raw_vrrp_arrives("esc-ha-0", "esc-ha-1", "192.0.2.11")
    assert _tcp_connects("esc-ha-0", "192.0.2.11", 5432)


def test_link_and_loss_and_heal(single: Lab) -> None:
    faults.link(single, "nb", "sync", up=False)
    assert not pings("nb", "192.0.2.10")
    faults.heal(single)
    assert eventually(lambda: pings("nb", "192.0.2.10"), what="link back")
    faults.netem(single, "nb", "sync", loss=100)
    assert not pings("nb", "192.0.2.10")
    assert single.read_state()["faults"]
    faults.heal(single)
    assert pings("nb", "192.0.2.10")
    assert single.read_state()["faults"] == []


def _start_sleeper(host: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(["ip", "netns", "exec", host, "sleep", "600"], start_new_session=True)
    eventually(lambda: any(faults.comm(p) == "sleep" for p in ns_pids(host)), what="sleeper")
    return proc


def _proc_state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def test_pause_resume_kill(single: Lab) -> None:
    proc = _start_sleeper("nb")
    try:
        (pid,) = [p for p in ns_pids("nb") if faults.comm(p) == "sleep"]
        faults.signal_component(single, "nb", "all", signal.SIGSTOP)
        assert eventually(lambda: _proc_state(pid) == "T", what="stopped")
        faults.heal(single)  # heal resumes paused processes
        assert eventually(lambda: _proc_state(pid) == "S", what="resumed")
        faults.signal_component(single, "nb", "all", signal.SIGKILL)
        assert not pid_is_live(pid)
    finally:
        proc.kill()
        proc.wait()
    bird_pids = faults.component_pids("router", "bird")
    assert bird_pids
    with pytest.raises(LabError, match="unknown component"):
        faults.component_pids("router", "nginx")


def test_diskfull_and_heal(single: Lab) -> None:
    data = single.node_paths("esc-ha-0").data_dir
    faults.diskfull(single, "esc-ha-0")
    with pytest.raises(OSError, match="No space"), open(data / "probe", "wb") as fh:
        fh.write(b"x" * 1_000_000)
        fh.flush()
        os.fsync(fh.fileno())
    faults.heal(single)
    (data / "probe").write_bytes(b"x" * 1_000_000)
    (data / "probe").unlink()


def test_reboot_kills_everything_and_resets_volatile_state(single: Lab) -> None:
    proc = _start_sleeper("esc-ha-0")
    paths = single.node_paths("esc-ha-0")
    (paths.run_dir / "leftover").write_text("x")
    # A VIP left on the interface by a killed keepalived must not survive a power cut.
    in_host("esc-ha-0", "ip", "addr", "add", "192.0.2.100/24", "dev", "eth0")
    try:
        faults.reboot(single, "esc-ha-0")
        assert not [p for p in ns_pids("esc-ha-0") if faults.comm(p) == "sleep"]
        addrs = in_host("esc-ha-0", "ip", "-o", "addr", "show", "dev", "eth0").stdout
        assert "192.0.2.100" not in addrs
        assert "192.0.2.10/24" in addrs and "2001:db8::10/64" in addrs
        assert list(paths.run_dir.iterdir()) == []
        assert pings("esc-ha-0", "192.0.2.1")
    finally:
        proc.kill()
        proc.wait()
