"""The lab VIM for real, on its own small network (not the lab's: that may be in use).

Two namespaces of this test's own, ``esc-vimt-<pid>s`` (the switch, holding the VNF bridge) and
``esc-vimt-<pid>c`` (a controller node on that bridge). One manager runs inside the controller
namespace under ``ip netns exec`` (as on a lab node, with a private mount namespace), the other
is this process: each must see and be able to delete what the other created.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from esc.manager.vim import VmSpec
from esclab.vim import LabVim, list_vms, remove_all_blocking
from esclab.vim_settings import LabVimSettings

pytestmark = pytest.mark.integration

SWITCH = f"esc-vimt-{os.getpid()}s"
CONTROLLER = f"esc-vimt-{os.getpid()}c"
PORT_IN_SWITCH = f"vt{os.getpid()}"[:15]
BRIDGE = "br-vnf"
SPEC = VmSpec("g", "img", "small")
FAMILIES = {
    6: ("2001:db8:200::/64", "2001:db8:200::10/64", 0x100),
    4: ("203.0.113.128/25", "203.0.113.130/25", 16),
}

MANAGER = """
import asyncio, sys
from esclab.vim_settings import LabVimSettings
from esclab.vim import LabVim
from esc.manager.vim import VmSpec
vim = LabVim(LabVimSettings.model_validate_json(sys.argv[1]))
op, dep, name = sys.argv[2:5]
if op == "create":
    asyncio.run(vim.create_vm(dep, name, VmSpec("g", "img", "small")))
else:
    asyncio.run(vim.delete_vm(dep, name))
"""

CONNECT = """
import socket, sys
with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3) as s:
    print(s.recv(300).decode(), end="")
"""


def sh(*argv: str, check: bool = True, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=check, timeout=timeout)


def in_ctl(*argv: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    return sh("ip", "netns", "exec", CONTROLLER, *argv, check=False, timeout=timeout)


def pings(addr: str) -> bool:
    return in_ctl("ping", "-c1", "-W1", addr).returncode == 0


def answer(addr: str, port: int) -> str:
    res = in_ctl(sys.executable, "-c", CONNECT, addr, str(port))
    return res.stdout if res.returncode == 0 else f"error: {res.stderr.strip()[-200:]}"


def manager_in_controller(settings: LabVimSettings, op: str, dep: str, name: str) -> None:
    res = in_ctl(sys.executable, "-c", MANAGER, settings.model_dump_json(), op, dep, name)
    assert res.returncode == 0, res.stderr


@pytest.fixture(params=[6, 4], ids=["ipv6", "ipv4"])
def vnf(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LabVimSettings]:
    """The switch and controller namespaces; torn down whatever happened."""
    subnet, ctl_addr, first_host = FAMILIES[request.param]
    settings = LabVimSettings(
        state_dir=str(tmp_path / "vim"),
        switch_netns=SWITCH,
        bridge=BRIDGE,
        subnet=subnet,  # type: ignore[arg-type]  # validated from text
        first_host=first_host,
        tcp_port=7000,
        create_delay_s=0.3,
    )
    try:
        for ns in (SWITCH, CONTROLLER):
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", SWITCH, "link", "add", BRIDGE, "type", "bridge", "stp_state", "0")
        sh("ip", "-n", SWITCH, "link", "set", BRIDGE, "up")
        sh(
            *("ip", "link", "add", "eth0", "netns", CONTROLLER, "type", "veth"),
            *("peer", "name", PORT_IN_SWITCH, "netns", SWITCH),
        )
        sh("ip", "-n", SWITCH, "link", "set", PORT_IN_SWITCH, "master", BRIDGE, "up")
        nodad = ["nodad"] if request.param == 6 else []
        sh("ip", "-n", CONTROLLER, "addr", "add", ctl_addr, "dev", "eth0", *nodad)
        sh("ip", "-n", CONTROLLER, "link", "set", "eth0", "up")
        yield settings
    finally:
        remove_all_blocking(settings.state_dir)
        for ns in (CONTROLLER, SWITCH):
            sh("ip", "netns", "del", ns, check=False)


def test_vms_answer_ping_and_tcp_and_go_away(vnf: LabVimSettings) -> None:
    here = LabVim(vnf)
    # one VM made by a manager on the "node" (a process that exits at once: the VM outlives
    # it), one by this process
    started = time.monotonic()
    manager_in_controller(vnf, "create", "dep-1", "vm-a")
    asyncio.run(here.create_vm("dep-1", "vm-b", SPEC))
    assert time.monotonic() - started >= 2 * vnf.create_delay_s
    asyncio.run(here.create_vm("dep-1", "vm-a", SPEC))  # exists already: not made again
    vms = {v.name: v for v in list_vms(vnf.state_dir)}
    assert sorted(vms) == ["vm-a", "vm-b"]
    assert len({v.address for v in vms.values()}) == 2
    pids = {v.pid for v in vms.values()}
    for vm in vms.values():
        assert vm.state == "active"
        assert asyncio.run(here.vm_exists("dep-1", vm.name))
        addr = str(vm.address.ip)
        assert pings(addr), f"{vm.name} at {addr} does not answer ping"
        assert answer(addr, vnf.tcp_port) == f"{vm.name}\n"
    log = Path(vnf.state_dir) / "logs" / f"{vms['vm-a'].vm_id}.log"
    assert "listening" in log.read_text()

    # each manager deletes the VM the other one made
    asyncio.run(here.delete_vm("dep-1", "vm-a"))
    manager_in_controller(vnf, "delete", "dep-1", "vm-b")
    asyncio.run(here.delete_vm("dep-1", "vm-b"))  # idempotent
    assert list_vms(vnf.state_dir) == []
    for vm in vms.values():
        assert not asyncio.run(here.vm_exists("dep-1", vm.name))
        assert not pings(str(vm.address.ip))
    for pid in pids:
        assert (
            not Path(f"/proc/{pid}/cmdline").exists()
            or not Path(f"/proc/{pid}/cmdline").read_bytes()
        )
    ports = json.loads(sh("ip", "-n", SWITCH, "-j", "link", "show", "master", BRIDGE).stdout)
    assert [p["ifname"] for p in ports] == [PORT_IN_SWITCH]


def test_remove_all_takes_every_vm(vnf: LabVimSettings) -> None:
    here = LabVim(vnf.model_copy(update={"create_delay_s": 0.0}))

    async def make() -> None:
        await asyncio.gather(*(here.create_vm("dep-2", f"vm-{i}", SPEC) for i in range(3)))

    asyncio.run(make())
    vms = list_vms(vnf.state_dir)
    assert all(pings(str(v.address.ip)) for v in vms)
    removed = remove_all_blocking(vnf.state_dir)
    assert len(removed) == 3
    assert list_vms(vnf.state_dir) == []
    assert not any(pings(str(v.address.ip)) for v in vms)
