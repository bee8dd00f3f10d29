"""The lab VIM's registry: VM ids and names, the choice of a VM's address, and the files under
``state_dir`` that every manager on the machine shares — one JSON record per VM (written
atomically), pid and log files, and the ``flock`` locks (polled, so waiting never blocks the
event loop) that keep two managers from choosing one address or working on one VM at once.
The layout is described in :mod:`esclab.vim`. The :class:`Registry` itself is blocking: the
driver calls it in threads.
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
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from esc.addresses import IPAddress, IPInterface
from esc.files import write_atomic
from esc.manager.vim import VimError, VmInfo, VmSpec

# The logger of esclab.vim, which this code came from: log configuration keeps matching it.
log = logging.getLogger("esclab.vim")

VM_PREFIX = "esc-vm-"
RESPONDER_MODULE = "esclab.vm_responder"
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
        # (a random temporary name per write: two threads of one process may write at once)
        text = json.dumps(vm.to_json(), indent=2, sort_keys=True)
        write_atomic(self.record(vm.vm_id), text, 0o644)

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
