"""The lab VIM against a fake runner that simulates ``unshare``, ``ip`` and ``nsenter``."""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import tomli_w
from pydantic import ValidationError

from esc.config.schema import EscConfig, NodePaths, parse_config
from esc.errors import CommandError, ConfigError
from esc.manager.vim import FakeVim, VimError, VmSpec, build_vim
from esclab import vim as labvim
from esclab.lab import lab_vim_settings
from esclab.vim import (
    Completed,
    LabVim,
    SubprocessRunner,
    allocate,
    list_vms,
    peer_name,
    remove_all,
    vm_id,
)
from esclab.vim_settings import (
    LabVimSettings,
    load_settings,
    parse_settings,
    save_settings,
    settings_path,
)

SPEC = VmSpec("g", "img", "small")
SW = "esc-sw"
BRIDGE = "br-vnf"


class Crash(BaseException):
    """The manager process dies here (nothing of the driver's own cleanup runs)."""


@dataclass(eq=False)
class Netns:
    name: str
    links: dict[str, Link] = field(default_factory=dict)


@dataclass(eq=False)
class Link:
    name: str
    ns: Netns
    peer: Link | None = None
    master: str | None = None
    up: bool = False
    addrs: list[str] = field(default_factory=list)


@dataclass
class Proc:
    cmdline: list[str]
    ns: Netns


def _opt(argv: Sequence[str], name: str) -> str:
    prefix = f"--{name}="
    return next(a[len(prefix) :] for a in argv if a.startswith(prefix))


class FakeWorld:
    """Namespaces, veths, bridges and processes, as far as the lab VIM uses them. Thread-safe:
    several drivers (in threads or not) share one world like managers share one machine."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.named: dict[str, Netns] = {SW: Netns(SW)}
        self.named[SW].links[BRIDGE] = Link(BRIDGE, self.named[SW])
        self.procs: dict[int, Proc] = {}
        self.pids = itertools.count(40000)
        self.calls: list[list[str]] = []
        self.crash_on: Callable[[list[str]], bool] | None = None
        self.crash_after_spawn = False
        self.fail_on: Callable[[list[str]], bool] | None = None

    # --- the Runner protocol ---

    async def run(self, argv: Sequence[str], *, check: bool = True) -> Completed:
        args = list(argv)
        with self.lock:
            self.calls.append(args)
            if self.crash_on is not None and self.crash_on(args):
                self.crash_on = None
                raise Crash(" ".join(args))
            if self.fail_on is not None and self.fail_on(args):
                result = Completed(2, "", "injected failure")
            else:
                result = self._do(args)
        if check and result.returncode != 0:
            raise CommandError(args, result.returncode, result.stderr)
        await asyncio.sleep(0)
        return result

    def cmdline(self, pid: int) -> list[str] | None:
        with self.lock:
            proc = self.procs.get(pid)
            return list(proc.cmdline) if proc else None

    def kill(self, pid: int, sig: int) -> None:
        with self.lock:
            proc = self.procs.pop(pid, None)
            if proc is None:
                return
            if not any(p.ns is proc.ns for p in self.procs.values()):
                # the last process left: the namespace goes, each veth pair with it
                for link in list(proc.ns.links.values()):
                    if link.peer is not None:
                        link.peer.ns.links.pop(link.peer.name, None)

    # --- simulation ---

    def spawn(self, cmdline: list[str], ns: Netns) -> int:
        with self.lock:
            pid = next(self.pids)
            self.procs[pid] = Proc(cmdline, ns)
            return pid

    def _ns_of_pid(self, text: str) -> Netns | None:
        proc = self.procs.get(int(text)) if text.isdigit() else None
        return proc.ns if proc else None

    def _do(self, args: list[str]) -> Completed:
        err = Completed(1, "", f"cannot: {' '.join(args)}")
        if args[:3] == ["unshare", "--net", "--"]:
            ns = Netns("")
            ns.links["lo"] = Link("lo", ns)
            pid = next(self.pids)
            self.procs[pid] = Proc(args[3:], ns)
            Path(_opt(args, "pidfile")).write_text(f"{pid}\n")
            if self.crash_after_spawn:
                self.crash_after_spawn = False
                raise Crash("after spawn")
            return Completed(0, f"{pid}\n", "")
        if args[0] == "nsenter":
            ns = self._ns_of_pid(args[1].removeprefix("--net=/proc/").removesuffix("/ns/net"))
            if ns is None or args[2] != "--":
                return err
            return self._ip(ns, args[3:])
        if args[:2] == ["ip", "-n"]:
            ns = self.named.get(args[2])
            if ns is None:
                return err
            return self._ip(ns, ["ip", *args[3:]])
        if args[:3] == ["ip", "link", "add"]:
            # ip link add NAME netns PID type veth peer name PEER netns SW
            name, pid, peer, sw = args[3], args[5], args[10], args[12]
            vm_ns, sw_ns = self._ns_of_pid(pid), self.named.get(sw)
            if vm_ns is None or sw_ns is None or name in vm_ns.links or peer in sw_ns.links:
                return err
            a, b = Link(name, vm_ns), Link(peer, sw_ns)
            a.peer, b.peer = b, a
            vm_ns.links[name], sw_ns.links[peer] = a, b
            return Completed(0, "", "")
        return err

    def _ip(self, ns: Netns, args: list[str]) -> Completed:
        err = Completed(1, "", f"cannot: {' '.join(args)}")
        if args[:3] == ["ip", "link", "set"]:
            link = ns.links.get(args[3])
            if link is None:
                return err
            rest = args[4:]
            if rest[:1] == ["master"]:
                if rest[1] not in ns.links:
                    return err
                link.master = rest[1]
                rest = rest[2:]
            link.up = rest == ["up"]
            return Completed(0, "", "")
        if args[:3] == ["ip", "link", "del"]:
            link = ns.links.pop(args[3], None)
            if link is None:
                return err
            if link.peer is not None:
                link.peer.ns.links.pop(link.peer.name, None)
            return Completed(0, "", "")
        if args[:3] == ["ip", "addr", "add"] and args[4] == "dev":
            link = ns.links.get(args[5])
            if link is None:
                return err
            link.addrs.append(args[3])
            return Completed(0, "", "")
        return err

    # --- what the tests look at ---

    def vms(self) -> dict[str, tuple[list[str], bool]]:
        """VM id -> (addresses on eth0, attached to the bridge), for every live VM namespace."""
        out: dict[str, tuple[list[str], bool]] = {}
        with self.lock:
            for proc in self.procs.values():
                vid = _opt(proc.cmdline, "vm")
                eth0 = proc.ns.links.get("eth0")
                attached = bool(eth0 and eth0.peer and eth0.peer.master == BRIDGE)
                out[vid] = (list(eth0.addrs) if eth0 else [], attached)
        return out

    def bridge_ports(self) -> set[str]:
        with self.lock:
            return {n for n, link in self.named[SW].links.items() if link.master == BRIDGE}

    def count(self, word: str) -> int:
        return sum(1 for c in self.calls if c[0] == word)


def settings(tmp_path: Path, **over: object) -> LabVimSettings:
    base: dict[str, object] = {"state_dir": str(tmp_path / "vim"), "create_delay_s": 0.0}
    base.update(over)
    return LabVimSettings.model_validate(base)


@pytest.fixture
def world() -> FakeWorld:
    return FakeWorld()


def make(tmp_path: Path, world: FakeWorld, **over: object) -> LabVim:
    return LabVim(settings(tmp_path, **over), world)


# --- names and addresses ----------------------------------------------------------------------


def test_vm_id_is_deterministic_and_fits_interface_names() -> None:
    a = vm_id("dep-1", "vm-1")
    assert a == vm_id("dep-1", "vm-1")
    assert a != vm_id("dep-1", "vm-2")
    assert a != vm_id("dep-1vm", "-1")  # the separator is not a printable character
    assert a.startswith("esc-vm-") and len(a) == 17
    assert len(peer_name(a)) <= 15


@pytest.mark.parametrize(
    ("dep", "name", "field_"),
    [
        ("", "vm", "deployment_id"),
        ("d\n1", "vm", "deployment_id"),
        ("d", "vm\tx", "vm_name"),
        ("d", "v" * 256, "vm_name"),
        ("d", "\x7f", "vm_name"),
        ("d", "a\u2028b", "vm_name"),
    ],
)
def test_names_are_validated(
    tmp_path: Path, world: FakeWorld, dep: str, name: str, field_: str
) -> None:
    vim = make(tmp_path, world)

    async def scenario() -> None:
        for call in (vim.create_vm(dep, name, SPEC), vim.delete_vm(dep, name)):
            with pytest.raises(VimError, match=f"^{field_}: "):
                await call
        with pytest.raises(VimError, match=f"^{field_}: "):
            await vim.vm_exists(dep, name)

    asyncio.run(scenario())
    assert world.calls == []


def test_allocate_lowest_free_and_exhaustion() -> None:
    net = ipaddress.ip_network("203.0.113.128/29")
    used = {ipaddress.ip_address("203.0.113.130")}
    assert str(allocate(net, 1, used)) == "203.0.113.129/29"
    used.add(ipaddress.ip_address("203.0.113.129"))
    assert str(allocate(net, 1, used)) == "203.0.113.131/29"
    used |= {net[i] for i in range(1, 7)}
    with pytest.raises(VimError, match="no free address"):
        allocate(net, 1, used)  # .135 is the broadcast address


# --- create -----------------------------------------------------------------------------------


def test_create_builds_one_vm_on_the_bridge(tmp_path: Path, world: FakeWorld) -> None:
    vim = make(tmp_path, world)
    info = asyncio.run(vim.create_vm("d1", "vm1", SPEC))
    assert (info.deployment_id, info.name, info.spec) == ("d1", "vm1", SPEC)
    vid = vm_id("d1", "vm1")
    assert world.vms() == {vid: (["2001:db8:200::100/64"], True)}
    assert world.bridge_ports() == {peer_name(vid)}
    (rec,) = list_vms(tmp_path / "vim")
    assert (rec.state, rec.vm_id, str(rec.address), rec.port) == (
        "active",
        vid,
        "2001:db8:200::100/64",
        7000,
    )
    assert rec.pid is not None and world.cmdline(rec.pid) is not None
    assert asyncio.run(vim.vm_exists("d1", "vm1"))
    assert not asyncio.run(vim.vm_exists("d1", "vm2"))
    # the answer line and the VM id are passed as single arguments, never through a shell
    spawn = next(c for c in world.calls if c[0] == "unshare")
    assert "--name=vm1" in spawn and f"--vm={vid}" in spawn and "--family=6" in spawn
    assert [a for c in world.calls for a in c if a == "nodad"] == ["nodad"]


def test_create_is_idempotent_also_when_concurrent(tmp_path: Path, world: FakeWorld) -> None:
    vim = make(tmp_path, world, create_delay_s=0.05)

    async def scenario() -> None:
        infos = await asyncio.gather(*(vim.create_vm("d1", "vm1", SPEC) for _ in range(5)))
        assert len(set(infos)) == 1
        await vim.create_vm("d1", "vm1", SPEC)

    asyncio.run(scenario())
    assert world.count("unshare") == 1
    assert len(world.vms()) == 1


def test_create_takes_the_boot_time(tmp_path: Path, world: FakeWorld) -> None:
    vim = make(tmp_path, world, create_delay_s=0.2)
    start = time.monotonic()
    asyncio.run(vim.create_vm("d1", "vm1", SPEC))
    assert time.monotonic() - start >= 0.2
    asyncio.run(vim.create_vm("d1", "vm1", SPEC))  # exists: answered, nothing started again
    assert world.count("unshare") == 1


def test_ipv4_subnet(tmp_path: Path, world: FakeWorld) -> None:
    vim = make(tmp_path, world, subnet="203.0.113.128/25", first_host=16)
    asyncio.run(vim.create_vm("d1", "vm1", SPEC))
    assert list(world.vms().values()) == [(["203.0.113.144/25"], True)]
    assert "--family=4" in next(c for c in world.calls if c[0] == "unshare")
    assert not any("nodad" in c for c in world.calls)


def test_two_drivers_sharing_a_registry_never_share_an_address(
    tmp_path: Path, world: FakeWorld
) -> None:
    a, b = make(tmp_path, world), make(tmp_path, world)

    async def scenario() -> None:
        await asyncio.gather(
            *(
                vim.create_vm("d1", f"vm{i}-{n}", SPEC)
                for i in range(10)
                for n, vim in enumerate((a, b))
            ),
            # the same VM through both drivers (old and new primary): one VM
            a.create_vm("d2", "same", SPEC),
            b.create_vm("d2", "same", SPEC),
        )

    asyncio.run(scenario())
    vms = list_vms(tmp_path / "vim")
    assert len(vms) == 21
    addresses = [v.address for v in vms]
    assert len(set(addresses)) == 21
    assert len(world.vms()) == 21
    assert world.count("unshare") == 21


def test_drivers_in_threads_never_share_an_address(tmp_path: Path, world: FakeWorld) -> None:
    errors: list[BaseException] = []

    def manager(n: int) -> None:
        vim = make(tmp_path, world)

        async def scenario() -> None:
            for i in range(6):
                await vim.create_vm("d", f"t{n}-{i}", SPEC)
                await vim.create_vm("d", f"shared-{i}", SPEC)

        try:
            asyncio.run(scenario())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=manager, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    vms = list_vms(tmp_path / "vim")
    assert len(vms) == 4 * 6 + 6
    assert len({v.address for v in vms}) == len(vms)
    assert world.count("unshare") == len(vms)


# --- delete and remove_all --------------------------------------------------------------------


def test_delete_removes_the_vm_and_frees_its_address(tmp_path: Path, world: FakeWorld) -> None:
    vim = make(tmp_path, world)

    async def scenario() -> None:
        await vim.create_vm("d1", "vm1", SPEC)
        await vim.create_vm("d1", "vm2", SPEC)
        await vim.delete_vm("d1", "vm1")
        assert not await vim.vm_exists("d1", "vm1")
        assert await vim.vm_exists("d1", "vm2")
        await vim.delete_vm("d1", "vm1")  # idempotent
        await vim.delete_vm("d9", "never")  # no error if absent
        await vim.create_vm("d1", "vm3", SPEC)

    asyncio.run(scenario())
    got = {v.name: str(v.address.ip) for v in list_vms(tmp_path / "vim")}
    assert got == {"vm2": "2001:db8:200::101", "vm3": "2001:db8:200::100"}
    assert set(world.vms()) == {vm_id("d1", "vm2"), vm_id("d1", "vm3")}
    assert world.bridge_ports() == {peer_name(vm_id("d1", "vm2")), peer_name(vm_id("d1", "vm3"))}
    assert not (tmp_path / "vim" / "run" / f"{vm_id('d1', 'vm1')}.pid").exists()


def test_delete_never_signals_a_process_that_is_not_the_vm(
    tmp_path: Path, world: FakeWorld
) -> None:
    vim = make(tmp_path, world)
    asyncio.run(vim.create_vm("d1", "vm1", SPEC))
    (rec,) = list_vms(tmp_path / "vim")
    assert rec.pid is not None
    world.kill(rec.pid, 9)  # the VM died, and its pid went to somebody else
    stranger = Netns("other")
    with world.lock:
        world.procs[rec.pid] = Proc(["sleep", "1000"], stranger)
    asyncio.run(vim.delete_vm("d1", "vm1"))
    assert world.cmdline(rec.pid) == ["sleep", "1000"]
    assert list_vms(tmp_path / "vim") == []


def test_remove_all(tmp_path: Path, world: FakeWorld) -> None:
    vim = make(tmp_path, world)

    async def scenario() -> list[str]:
        for dep, name in (("d1", "a"), ("d1", "b"), ("d2", "a")):
            await vim.create_vm(dep, name, SPEC)
        return await remove_all(tmp_path / "vim", world)

    removed = asyncio.run(scenario())
    assert len(removed) == 3
    assert "d1/a" in removed[0]
    assert list_vms(tmp_path / "vim") == []
    assert world.vms() == {}
    assert world.bridge_ports() == set()
    assert asyncio.run(remove_all(tmp_path / "vim", world)) == []
    assert asyncio.run(remove_all(tmp_path / "nothing-here", world)) == []


def test_remove_all_does_not_wait_forever_for_a_lock(tmp_path: Path, world: FakeWorld) -> None:
    vim = make(tmp_path, world)

    async def scenario() -> list[str]:
        await vim.create_vm("d1", "a", SPEC)
        async with labvim._flock(vim.registry.lock(vm_id("d1", "a")), 1.0):
            return await remove_all(tmp_path / "vim", world, lock_timeout_s=0.05)

    assert len(asyncio.run(scenario())) == 1
    assert world.vms() == {}
    assert list_vms(tmp_path / "vim") == []


# --- crashes, cancellation, failures ----------------------------------------------------------


def _crash_then_recover(tmp_path: Path, world: FakeWorld) -> None:
    vim = make(tmp_path, world)
    with pytest.raises(Crash):
        asyncio.run(vim.create_vm("d1", "vm1", SPEC))
    assert len(world.vms()) == 1  # a half-made VM was left behind
    assert not asyncio.run(vim.vm_exists("d1", "vm1"))
    (rec,) = list_vms(tmp_path / "vim")
    assert rec.state == "creating"
    again = make(tmp_path, world)  # the next manager
    asyncio.run(again.create_vm("d1", "vm1", SPEC))
    vid = vm_id("d1", "vm1")
    assert world.vms() == {vid: (["2001:db8:200::100/64"], True)}
    assert world.bridge_ports() == {peer_name(vid)}
    assert asyncio.run(again.vm_exists("d1", "vm1"))
    (rec,) = list_vms(tmp_path / "vim")
    assert rec.state == "active"


@pytest.mark.parametrize("step", ["link add", "master", "addr add", "boot"])
def test_crash_mid_create_is_recovered(tmp_path: Path, world: FakeWorld, step: str) -> None:
    if step == "boot":
        world.crash_on = lambda a: a[-2:] == ["eth0", "up"]
    else:
        world.crash_on = lambda a: step in " ".join(a)
    _crash_then_recover(tmp_path, world)


def test_crash_before_the_pid_is_recorded(tmp_path: Path, world: FakeWorld) -> None:
    # the responder runs and wrote its pid file, the manager died before reading its pid
    world.crash_after_spawn = True
    _crash_then_recover(tmp_path, world)


def test_cancelled_create_is_resumed(tmp_path: Path, world: FakeWorld) -> None:
    vim = make(tmp_path, world, create_delay_s=5.0)

    async def scenario() -> None:
        task = asyncio.create_task(vim.create_vm("d1", "vm1", SPEC))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not await vim.vm_exists("d1", "vm1")
        fast = make(tmp_path, world)
        await fast.create_vm("d1", "vm1", SPEC)
        assert await fast.vm_exists("d1", "vm1")

    asyncio.run(scenario())
    assert len(world.vms()) == 1
    assert world.count("unshare") == 2


def test_a_dead_vm_is_rebuilt_at_its_address(tmp_path: Path, world: FakeWorld) -> None:
    vim = make(tmp_path, world)
    asyncio.run(vim.create_vm("d1", "vm1", SPEC))
    asyncio.run(vim.create_vm("d1", "vm2", SPEC))
    rec = next(v for v in list_vms(tmp_path / "vim") if v.name == "vm1")
    assert rec.pid is not None
    world.kill(rec.pid, 9)
    assert not asyncio.run(vim.vm_exists("d1", "vm1"))
    asyncio.run(vim.create_vm("d1", "vm1", SPEC))
    assert asyncio.run(vim.vm_exists("d1", "vm1"))
    assert world.vms()[vm_id("d1", "vm1")] == (["2001:db8:200::100/64"], True)


def test_failed_create_leaves_nothing(tmp_path: Path, world: FakeWorld) -> None:
    vim = make(tmp_path, world, bridge="br-nope")
    with pytest.raises(VimError, match="creating d1/vm1"):
        asyncio.run(vim.create_vm("d1", "vm1", SPEC))
    assert world.vms() == {}
    assert world.bridge_ports() == set()
    assert list_vms(tmp_path / "vim") == []


def test_responder_dying_at_boot_is_an_error(tmp_path: Path, world: FakeWorld) -> None:
    vim = make(tmp_path, world)
    real = world.run

    async def run(argv: Sequence[str], *, check: bool = True) -> Completed:
        result = await real(argv, check=check)
        if list(argv[-3:]) == ["set", "eth0", "up"]:
            pid = int(argv[1].split("/")[2])
            world.kill(pid, 9)
        return result

    world.run = run  # type: ignore[method-assign]
    with pytest.raises(VimError, match="died while booting"):
        asyncio.run(vim.create_vm("d1", "vm1", SPEC))
    assert list_vms(tmp_path / "vim") == []
    assert world.bridge_ports() == set()


def test_id_collision_is_refused(tmp_path: Path, world: FakeWorld) -> None:
    vim = make(tmp_path, world)
    asyncio.run(vim.create_vm("d1", "vm1", SPEC))
    record = tmp_path / "vim" / "vms" / f"{vm_id('d1', 'vm1')}.json"
    os.rename(record, tmp_path / "vim" / "vms" / f"{vm_id('d1', 'vm2')}.json")
    with pytest.raises(VimError, match="is taken by d1/vm1"):
        asyncio.run(vim.create_vm("d1", "vm2", SPEC))


def test_a_held_lock_times_out(tmp_path: Path, world: FakeWorld) -> None:
    vim = LabVim(settings(tmp_path), world, lock_timeout_s=0.1)
    lock = vim.registry.lock(vm_id("d1", "vm1"))

    async def scenario() -> None:
        async with labvim._flock(lock, 1.0):
            with pytest.raises(VimError, match="still locked"):
                await vim.create_vm("d1", "vm1", SPEC)

    asyncio.run(scenario())


# --- the real runner (harmless commands only) -------------------------------------------------


def test_subprocess_runner() -> None:
    runner = SubprocessRunner(timeout_s=5)

    async def scenario() -> None:
        assert (await runner.run(["echo", "hi"])).stdout == "hi\n"
        assert (await runner.run(["false"], check=False)).returncode == 1
        with pytest.raises(CommandError):
            await runner.run(["false"])
        with pytest.raises(CommandError, match="127"):
            await runner.run(["/nonexistent/esc-no-such-tool"])

    asyncio.run(scenario())
    assert runner.cmdline(os.getpid()) is not None
    assert runner.cmdline(2**22 + 12345) is None


def test_subprocess_runner_times_out() -> None:
    with pytest.raises(CommandError, match="timed out"):
        asyncio.run(SubprocessRunner(timeout_s=0.1).run(["sleep", "5"]))


# --- config -----------------------------------------------------------------------------------


def test_lab_vim_settings_live_beside_the_config_and_round_trip(tmp_path: Path) -> None:
    paths = NodePaths(tmp_path)
    data = {"subnet": "203.0.113.128/25", "first_host": 16, "tcp_port": 7100}
    saved = parse_settings(data, "test")
    save_settings(saved, paths)
    assert settings_path(paths).parent == paths.config_file.parent
    assert load_settings(paths) == saved
    cfg = parse_config({"manager": {"vim": "lab"}})
    vim = build_vim(cfg, paths)
    assert isinstance(vim, LabVim)
    assert vim.settings.subnet == ipaddress.ip_network("203.0.113.128/25")
    assert isinstance(build_vim(EscConfig(), paths), FakeVim)
    default = build_vim(cfg, NodePaths(tmp_path / "no-settings"))
    assert isinstance(default, LabVim)
    assert str(default.settings.subnet) == "2001:db8:200::/64"


def test_the_lab_registry_is_under_the_lab_root(tmp_path: Path) -> None:
    assert lab_vim_settings(tmp_path).state_dir == str(tmp_path / "vim")


@pytest.mark.parametrize(
    ("data", "field_"),
    [
        ({"subnet": "10.0.0.0/24"}, "subnet"),
        ({"subnet": "192.0.2.0/23"}, "subnet"),
        ({"subnet": "192.0.2.1/24"}, "subnet"),
        ({"subnet": "203.0.113.128/25", "first_host": 127}, "first_host"),
        ({"bridge": "br\nx"}, "bridge"),
        ({"bridge": "a-very-long-bridge"}, "bridge"),
        ({"switch_netns": "../etc"}, "switch_netns"),
        ({"state_dir": "relative"}, "state_dir"),
        ({"tcp_port": 0}, "tcp_port"),
        ({"create_delay_s": -1}, "create_delay_s"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_lab_vim_settings_errors_name_the_key_and_the_file(
    data: dict[str, object], field_: str, tmp_path: Path
) -> None:
    paths = NodePaths(tmp_path)
    settings_path(paths).parent.mkdir(parents=True)
    settings_path(paths).write_text(tomli_w.dumps(data))
    with pytest.raises(ConfigError) as err:
        load_settings(paths)
    assert err.value.field == field_
    assert str(settings_path(paths)) in err.value.message


def test_the_product_schema_has_no_lab_settings() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({"manager": {"vim": "lab", "lab_vim": {"state_dir": "/x"}}})
    assert err.value.field == "manager.lab_vim"


def test_without_the_lab_package_vim_lab_is_refused_naming_the_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An installed product has no esclab: importing it fails as it does here."""
    monkeypatch.setitem(sys.modules, "esclab.vim", None)
    with pytest.raises(ConfigError) as err:
        build_vim(parse_config({"manager": {"vim": "lab"}}), NodePaths(tmp_path))
    assert err.value.field == "manager.vim"


@pytest.mark.parametrize("subnet", ["203.0.113.128/25", "2001:db8:200::/64"])
def test_settings_survive_json_as_handed_to_another_process(tmp_path: Path, subnet: str) -> None:
    """The lab hands the settings to the VIM's process as JSON (the network as text): the strict
    schema must take it back, and still refuse what is not a network's text."""
    s = settings(tmp_path, subnet=subnet, first_host=16)
    assert LabVimSettings.model_validate_json(s.model_dump_json()) == s
    for bad in (5, True, "x"):
        with pytest.raises(ValidationError, match="subnet"):
            LabVimSettings.model_validate({**s.model_dump(), "subnet": bad})
