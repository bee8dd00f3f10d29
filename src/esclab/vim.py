"""The lab VIM: each VM is a network namespace on the lab's VNF bridge, with a responder.

A VM is the process ``esclab.vm_responder`` started in a fresh network namespace
(``unshare --net``): the namespace lives exactly as long as that process. One veth joins it
to the VNF bridge in the switch namespace; the VM gets one address from the configured subnet,
so the kernel answers ping, and the responder answers one TCP port with the VM's name.

Why a process and not a named namespace (``ip netns add``): the manager runs under
``ip netns exec``, which gives it a private mount namespace, and the name of a namespace is a
bind mount under /run/netns. A namespace the manager named would be visible to that node only,
and would vanish with it; the peer node's manager, after a failover, could not find it. A
process id is visible to both nodes, and the VM survives the death of the node that created it.

The VIM is outside both controller nodes, so its registry is too: ``state_dir`` (shared by
every manager on the machine) holds one JSON file per VM, written atomically::

    state_dir/alloc.lock          held while an address is chosen, so none is handed out twice
    state_dir/vms/ID.json         deployment, name, address, responder pid, state
    state_dir/locks/ID.lock       held while one VM is created or deleted (by either manager)
    state_dir/run/ID.pid          written by the responder itself, before it answers anything
    state_dir/logs/ID.log         the responder's output

``ID`` is ``esc-vm-`` and 10 hex digits of the SHA-256 of (deployment id, VM name), so every
operation is idempotent by name. A record is written (state ``creating``, address reserved)
before anything is started, and the responder writes its own pid file first thing: a manager
that dies at any point leaves a VM the next call finds and rebuilds with the same address.

Every side effect goes through :class:`Runner`; unit tests use a fake one. Nothing here
blocks the event loop: commands run as asyncio subprocesses, files are read and written in
threads, locks are polled.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import hashlib
import ipaddress
import json
import logging
import os
import secrets
import signal
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from esc.addresses import IPAddress, IPInterface
from esc.config.schema import NodePaths
from esc.errors import CommandError
from esc.manager.vim import Vim, VimError, VmInfo, VmSpec
from esclab.vim_settings import LabVimSettings, load_settings

log = logging.getLogger(__name__)

VM_PREFIX = "esc-vm-"
RESPONDER_MODULE = "esclab.vm_responder"
VM_IFACE = "eth0"  # the VM's interface, inside its namespace
MAX_NAME = 255
VmState = Literal["creating", "active"]


# --- names ------------------------------------------------------------------------------------


def check_name(field: str, value: object) -> str:
    """A deployment id or VM name: it is answered by the responder and passed on its command
    line, so no control characters (a newline would make one answer two)."""
    if not isinstance(value, str) or not value:
        raise VimError(f"{field}: must be a non-empty string")
    if len(value) > MAX_NAME:
        raise VimError(f"{field}: longer than {MAX_NAME} characters")
    if not value.isprintable():
        raise VimError(f"{field}: must not contain control characters (newline, tab, ...)")
    return value


def vm_id(deployment_id: str, vm_name: str) -> str:
    """The VM's deterministic id, ``esc-vm-`` + 10 hex digits (names are validated)."""
    check_name("deployment_id", deployment_id)
    check_name("vm_name", vm_name)
    digest = hashlib.sha256(f"{deployment_id}\0{vm_name}".encode()).hexdigest()
    return VM_PREFIX + digest[:10]


def peer_name(vid: str) -> str:
    """The VM's veth end on the bridge (``vm-`` + 10 hex digits: 13 of the 15 allowed)."""
    return "vm-" + vid.removeprefix(VM_PREFIX)


def is_responder(cmdline: Sequence[str] | None, vid: str) -> bool:
    """True when ``cmdline`` is the responder of VM ``vid``: a pid is only ever signalled after
    this check, so a recycled pid is never killed."""
    return cmdline is not None and RESPONDER_MODULE in cmdline and f"--vm={vid}" in cmdline


def allocate(
    subnet: ipaddress.IPv4Network | ipaddress.IPv6Network, first_host: int, used: set[IPAddress]
) -> IPInterface:
    """The lowest free address of ``subnet`` from host number ``first_host`` up."""
    last = subnet.num_addresses - 2  # IPv4: not the broadcast address (IPv6: kept alike)
    index = first_host
    while index <= last:
        addr = subnet[index]
        if addr not in used:
            return ipaddress.ip_interface(f"{addr}/{subnet.prefixlen}")
        index += 1
    raise VimError(f"lab VIM: no free address left in {subnet} (from host {first_host})")


# --- the command seam -------------------------------------------------------------------------


@dataclass(frozen=True)
class Completed:
    returncode: int
    stdout: str
    stderr: str


class Runner(Protocol):
    """Every side effect of the lab VIM outside its state directory."""

    async def run(self, argv: Sequence[str], *, check: bool = True) -> Completed:
        """Run ``argv`` (no shell); CommandError on a non-zero exit when ``check``."""
        ...

    def cmdline(self, pid: int) -> list[str] | None:
        """The command line of ``pid``; None when it is gone (or a zombie)."""
        ...

    def kill(self, pid: int, sig: int) -> None:
        """Send ``sig`` to ``pid``; no error if it is gone."""
        ...


class SubprocessRunner:
    """The real runner: asyncio subprocesses, /proc, os.kill."""

    def __init__(self, timeout_s: float = 30.0) -> None:
        self.timeout_s = timeout_s

    async def run(self, argv: Sequence[str], *, check: bool = True) -> Completed:
        args = list(argv)
        try:
            proc = await asyncio.create_subprocess_exec(
                *args,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as exc:
            raise CommandError(args, 127, str(exc)) from exc
        try:
            async with asyncio.timeout(self.timeout_s):
                out, err = await proc.communicate()
        except TimeoutError:
            await _reap(proc)
            raise CommandError(args, -1, f"timed out after {self.timeout_s}s") from None
        except BaseException:
            # cancelled: do not leave the command running behind the caller's back
            await _reap(proc)
            raise
        result = Completed(proc.returncode or 0, out.decode(errors="replace"), err.decode())
        if check and result.returncode != 0:
            raise CommandError(args, result.returncode, result.stderr)
        return result

    def cmdline(self, pid: int) -> list[str] | None:
        try:
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return None
        if not raw:
            return None  # a zombie (or a kernel thread): not a live responder
        return raw.decode(errors="replace").rstrip("\0").split("\0")

    def kill(self, pid: int, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


async def _reap(proc: asyncio.subprocess.Process) -> None:
    """Kill ``proc`` and wait for it (briefly; also when the caller is being cancelled)."""
    if proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    with contextlib.suppress(BaseException):
        await asyncio.wait_for(proc.wait(), 5.0)


# --- the registry -----------------------------------------------------------------------------


@dataclass(frozen=True)
class LabVm:
    """One VM as recorded in the registry."""

    deployment_id: str
    name: str
    vm_id: str
    address: IPInterface
    switch_netns: str
    peer: str
    port: int
    spec: VmSpec
    state: VmState = "creating"
    pid: int | None = None
    created_at: float = 0.0

    def info(self) -> VmInfo:
        return VmInfo(self.deployment_id, self.name, self.spec)

    def to_json(self) -> dict[str, Any]:
        return {
            "deployment_id": self.deployment_id,
            "name": self.name,
            "vm_id": self.vm_id,
            "address": str(self.address),
            "switch_netns": self.switch_netns,
            "peer": self.peer,
            "port": self.port,
            "spec": dataclasses.asdict(self.spec),
            "state": self.state,
            "pid": self.pid,
            "created_at": self.created_at,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LabVm:
        spec = data["spec"]
        state = data["state"]
        if state not in ("creating", "active"):
            raise ValueError(f"unknown state {state!r}")
        pid = data.get("pid")
        return cls(
            deployment_id=str(data["deployment_id"]),
            name=str(data["name"]),
            vm_id=str(data["vm_id"]),
            address=ipaddress.ip_interface(data["address"]),
            switch_netns=str(data["switch_netns"]),
            peer=str(data["peer"]),
            port=int(data["port"]),
            spec=VmSpec(
                str(spec["vm_group"]),
                str(spec["image"]),
                str(spec["flavor"]),
                tuple(str(n) for n in spec.get("networks", ())),
            ),
            state=state,
            pid=int(pid) if pid is not None else None,
            created_at=float(data.get("created_at", 0.0)),
        )


class Registry:
    """The files under ``state_dir``. Blocking: the driver calls it in threads."""

    def __init__(self, state_dir: Path) -> None:
        self.root = state_dir

    @property
    def alloc_lock(self) -> Path:
        return self.root / "alloc.lock"

    def record(self, vid: str) -> Path:
        return self.root / "vms" / f"{vid}.json"

    def lock(self, vid: str) -> Path:
        return self.root / "locks" / f"{vid}.lock"

    def pidfile(self, vid: str) -> Path:
        return self.root / "run" / f"{vid}.pid"

    def logfile(self, vid: str) -> Path:
        return self.root / "logs" / f"{vid}.log"

    def ensure(self) -> None:
        for sub in ("vms", "locks", "run", "logs"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    def read(self, vid: str) -> LabVm | None:
        path = self.record(vid)
        try:
            text = path.read_text()
        except FileNotFoundError:
            return None
        try:
            return LabVm.from_json(json.loads(text))
        except (ValueError, KeyError, TypeError) as exc:
            raise VimError(f"lab VIM: unreadable record {path}: {exc}") from exc

    def write(self, vm: LabVm) -> None:
        path = self.record(vm.vm_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        # unique per writer: two threads of one process may write at once
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, json.dumps(vm.to_json(), indent=2, sort_keys=True).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)

    def remove(self, vid: str) -> None:
        self.record(vid).unlink(missing_ok=True)
        self.pidfile(vid).unlink(missing_ok=True)

    def all(self) -> list[LabVm]:
        """Every readable record (an unreadable one is logged and left alone)."""
        out: list[LabVm] = []
        folder = self.root / "vms"
        if not folder.is_dir():
            return out
        for path in sorted(folder.glob(f"{VM_PREFIX}*.json")):
            try:
                vm = self.read(path.stem)
            except VimError as exc:
                log.warning("%s", exc)
                continue
            if vm is not None:
                out.append(vm)
        return out

    def read_pid(self, vid: str) -> int | None:
        try:
            text = self.pidfile(vid).read_text().strip()
        except OSError:
            return None
        return int(text) if text.isdigit() else None

    def orphan_pids(self) -> dict[str, int]:
        """VM id -> pid of pid files without a record (a record is always written first, so
        only a hand-edited directory has these)."""
        folder = self.root / "run"
        if not folder.is_dir():
            return {}
        out: dict[str, int] = {}
        for path in folder.glob(f"{VM_PREFIX}*.pid"):
            vid = path.stem
            pid = self.read_pid(vid)
            if pid is not None and not self.record(vid).exists():
                out[vid] = pid
        return out


def list_vms(state_dir: Path | str) -> list[LabVm]:
    """Every VM recorded in ``state_dir``, in (deployment, name) order."""
    vms = Registry(Path(state_dir)).all()
    return sorted(vms, key=lambda v: (v.deployment_id, v.name))


class LockTimeout(VimError):
    """A lock in the state directory stayed held (by another manager) for too long."""


@contextlib.asynccontextmanager
async def _flock(path: Path, timeout_s: float) -> AsyncIterator[None]:
    """An exclusive ``flock`` on ``path``, polled so that waiting never blocks the loop and a
    cancelled waiter never ends up holding it. Released by closing the file (also on crash)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if loop.time() >= deadline:
                    raise LockTimeout(
                        f"lab VIM: {path} still locked after {timeout_s:.0f}s"
                    ) from None
                await asyncio.sleep(0.01)
        yield
    finally:
        os.close(fd)


# --- stopping a VM ----------------------------------------------------------------------------


async def _stop_responder(runner: Runner, pid: int, vid: str, wait_s: float = 2.0) -> bool:
    """SIGTERM, then SIGKILL, the responder ``pid`` of ``vid``; False if it was not ours."""
    if not is_responder(runner.cmdline(pid), vid):
        return False
    for sig in (signal.SIGTERM, signal.SIGKILL):
        runner.kill(pid, sig)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if not is_responder(runner.cmdline(pid), vid):
                return True
            await asyncio.sleep(0.02)
    raise VimError(f"lab VIM: responder {pid} of {vid} survived SIGKILL")


async def _teardown(
    runner: Runner, registry: Registry, vid: str, pids: set[int], switch_netns: str, peer: str
) -> None:
    """Take VM ``vid`` apart: its veth (the bridge end is deleted explicitly, because a dying
    namespace releases its devices only later and a rebuild would find the name taken), then
    its responder, which takes the namespace with it."""
    await runner.run(["ip", "-n", switch_netns, "link", "del", peer], check=False)
    pid = await asyncio.to_thread(registry.read_pid, vid)
    for p in sorted(pids | ({pid} if pid is not None else set())):
        await _stop_responder(runner, p, vid)
    await asyncio.to_thread(registry.pidfile(vid).unlink, True)


async def remove_all(
    state_dir: Path | str, runner: Runner | None = None, *, lock_timeout_s: float = 5.0
) -> list[str]:
    """Remove every VM recorded in ``state_dir`` (for the lab's ``down``); returns what went.

    Call it after the managers are stopped: a VM being created is waited for a few seconds,
    then removed anyway."""
    runner = runner or SubprocessRunner()
    registry = Registry(Path(state_dir))
    removed: list[str] = []
    for vm in await asyncio.to_thread(list_vms, state_dir):
        what = f"VM {vm.vm_id} ({vm.deployment_id}/{vm.name}, {vm.address.ip})"
        try:
            try:
                async with _flock(registry.lock(vm.vm_id), lock_timeout_s):
                    await _remove_one(runner, registry, vm)
            except LockTimeout as exc:
                log.warning("%s; removing %s without its lock", exc, vm.vm_id)
                await _remove_one(runner, registry, vm)
        except (VimError, CommandError, OSError) as exc:
            # the lab goes down anyway: report it and carry on with the others
            removed.append(f"{what} NOT removed: {exc}")
            continue
        removed.append(what)
    for vid, pid in (await asyncio.to_thread(registry.orphan_pids)).items():
        if await _stop_responder(runner, pid, vid):
            removed.append(f"VM {vid} (unrecorded, pid {pid})")
        await asyncio.to_thread(registry.pidfile(vid).unlink, True)
    return removed


async def _remove_one(runner: Runner, registry: Registry, vm: LabVm) -> None:
    pids = {vm.pid} if vm.pid is not None else set()
    await _teardown(runner, registry, vm.vm_id, pids, vm.switch_netns, vm.peer)
    await asyncio.to_thread(registry.remove, vm.vm_id)


def remove_all_blocking(state_dir: Path | str) -> list[str]:
    """:func:`remove_all` for synchronous callers (the lab); not from inside an event loop."""
    return asyncio.run(remove_all(state_dir))


# --- the driver -------------------------------------------------------------------------------


class LabVim:
    """The :class:`~esc.manager.vim.Vim` of the lab. Any number of instances, in any number of
    processes, may share one ``state_dir``: locks there keep them from stepping on each other."""

    def __init__(
        self,
        settings: LabVimSettings,
        runner: Runner | None = None,
        *,
        lock_timeout_s: float = 60.0,
    ) -> None:
        self.settings = settings
        self.runner: Runner = runner or SubprocessRunner()
        self.registry = Registry(Path(settings.state_dir))
        self.python = settings.python or sys.executable
        self.lock_timeout_s = lock_timeout_s

    # --- the Vim protocol ---

    async def create_vm(self, deployment_id: str, vm_name: str, spec: VmSpec) -> VmInfo:
        vid = vm_id(deployment_id, vm_name)
        await asyncio.to_thread(self.registry.ensure)
        async with _flock(self.registry.lock(vid), self.lock_timeout_s):
            old = await self._read(vid, deployment_id, vm_name)
            if old is not None and old.state == "active" and self._alive(old):
                return old.info()
            if old is not None:
                why = "half-created" if old.state == "creating" else "not running"
                log.info("lab VIM: %s (%s/%s) %s; rebuilding", vid, deployment_id, vm_name, why)
            await self._take_apart(vid, old)
            vm = await self._reserve(deployment_id, vm_name, vid, spec, old)
            try:
                vm = await self._build(vm)
            except (CommandError, OSError, VimError) as exc:
                # give the address back; a retry starts from nothing
                with contextlib.suppress(CommandError, OSError, VimError):
                    await self._take_apart(vid, vm)
                    await asyncio.to_thread(self.registry.remove, vid)
                if isinstance(exc, VimError):
                    raise
                raise VimError(f"lab VIM: creating {deployment_id}/{vm_name}: {exc}") from exc
        return vm.info()

    async def delete_vm(self, deployment_id: str, vm_name: str) -> None:
        vid = vm_id(deployment_id, vm_name)
        await asyncio.to_thread(self.registry.ensure)
        async with _flock(self.registry.lock(vid), self.lock_timeout_s):
            vm = await self._read(vid, deployment_id, vm_name)
            try:
                await self._take_apart(vid, vm)
            except (CommandError, OSError) as exc:
                raise VimError(f"lab VIM: deleting {deployment_id}/{vm_name}: {exc}") from exc
            await asyncio.to_thread(self.registry.remove, vid)
        if vm is not None:
            log.info("lab VIM: deleted %s (%s/%s)", vid, deployment_id, vm_name)

    async def vm_exists(self, deployment_id: str, vm_name: str) -> bool:
        """True when the VM was created completely and its responder (its namespace) lives."""
        vid = vm_id(deployment_id, vm_name)
        vm = await self._read(vid, deployment_id, vm_name)
        return vm is not None and vm.state == "active" and self._alive(vm)

    # --- more than the protocol ---

    async def vm(self, deployment_id: str, vm_name: str) -> LabVm | None:
        """The registry's record of a VM (address, pid, state), or None."""
        return await self._read(vm_id(deployment_id, vm_name), deployment_id, vm_name)

    # --- steps ---

    async def _read(self, vid: str, deployment_id: str, vm_name: str) -> LabVm | None:
        vm = await asyncio.to_thread(self.registry.read, vid)
        if vm is not None and (vm.deployment_id, vm.name) != (deployment_id, vm_name):
            raise VimError(
                f"lab VIM: id {vid} of {deployment_id}/{vm_name} is taken by "
                f"{vm.deployment_id}/{vm.name}"
            )
        return vm

    def _alive(self, vm: LabVm) -> bool:
        return vm.pid is not None and is_responder(self.runner.cmdline(vm.pid), vm.vm_id)

    async def _take_apart(self, vid: str, vm: LabVm | None) -> None:
        """Remove whatever exists of ``vid`` (nothing, a half-built VM or a whole one)."""
        pids = {vm.pid} if vm is not None and vm.pid is not None else set()
        switch = vm.switch_netns if vm is not None else self.settings.switch_netns
        await _teardown(self.runner, self.registry, vid, pids, switch, peer_name(vid))

    async def _reserve(
        self, deployment_id: str, vm_name: str, vid: str, spec: VmSpec, old: LabVm | None
    ) -> LabVm:
        """Write the record (state ``creating``) with an address no other VM has: the one the
        VM had before if it still fits, else the lowest free one."""
        s = self.settings
        async with _flock(self.registry.alloc_lock, self.lock_timeout_s):
            others = await asyncio.to_thread(self.registry.all)
            used = {v.address.ip for v in others if v.vm_id != vid}
            if (
                old is not None
                and old.address.network == s.subnet
                and old.address.ip not in used
                and int(old.address.ip) - int(s.subnet.network_address) >= s.first_host
            ):
                address = old.address
            else:
                address = allocate(s.subnet, s.first_host, used)
            vm = LabVm(
                deployment_id=deployment_id,
                name=vm_name,
                vm_id=vid,
                address=address,
                switch_netns=s.switch_netns,
                peer=peer_name(vid),
                port=s.tcp_port,
                spec=spec,
                created_at=time.time(),
            )
            await asyncio.to_thread(self.registry.write, vm)
        return vm

    async def _build(self, vm: LabVm) -> LabVm:
        s = self.settings
        started = time.monotonic()
        vid = vm.vm_id
        res = await self.runner.run(
            [
                "unshare",
                "--net",
                "--",
                self.python,
                "-m",
                RESPONDER_MODULE,
                f"--vm={vid}",
                f"--name={vm.name}",
                f"--port={vm.port}",
                f"--family={vm.address.version}",
                f"--pidfile={self.registry.pidfile(vid)}",
                f"--log={self.registry.logfile(vid)}",
            ]
        )
        lines = res.stdout.split()
        if not lines or not lines[-1].isdigit():
            raise VimError(f"lab VIM: the responder of {vid} reported no pid: {res.stdout!r}")
        pid = int(lines[-1])
        vm = dataclasses.replace(vm, pid=pid)
        await asyncio.to_thread(self.registry.write, vm)
        in_vm = ["nsenter", f"--net=/proc/{pid}/ns/net", "--"]
        veth = ["type", "veth", "peer", "name", vm.peer, "netns", vm.switch_netns]
        await self.runner.run(["ip", "link", "add", VM_IFACE, "netns", str(pid), *veth])
        await self.runner.run(
            ["ip", "-n", vm.switch_netns, "link", "set", vm.peer, "master", s.bridge, "up"]
        )
        await self.runner.run([*in_vm, "ip", "link", "set", "lo", "up"])
        # nodad: the address answers at once (DAD would hold it back for a second or more)
        nodad = ["nodad"] if vm.address.version == 6 else []
        await self.runner.run(
            [*in_vm, "ip", "addr", "add", str(vm.address), "dev", VM_IFACE, *nodad]
        )
        await self.runner.run([*in_vm, "ip", "link", "set", VM_IFACE, "up"])
        # Simulated boot time: a real VM takes a while, and a failover must be able to land
        # in the middle of a deployment.
        await asyncio.sleep(s.create_delay_s)
        if not self._alive(vm):
            raise VimError(
                f"lab VIM: the responder of {vid} died while booting "
                f"(see {self.registry.logfile(vid)})"
            )
        vm = dataclasses.replace(vm, state="active")
        await asyncio.to_thread(self.registry.write, vm)
        log.info(
            "lab VIM: created %s (%s/%s) at %s, pid %d, in %.2fs",
            vid,
            vm.deployment_id,
            vm.name,
            vm.address.ip,
            pid,
            time.monotonic() - started,
        )
        return vm


def build_lab_vim(paths: NodePaths) -> Vim:
    """The lab VIM with the node's settings (``esclab.vim_settings``; the defaults if none)."""
    settings = load_settings(paths)
    log.info(
        "VIM: lab (%s on %s/%s, registry %s)",
        settings.subnet,
        settings.switch_netns,
        settings.bridge,
        settings.state_dir,
    )
    return LabVim(settings)
