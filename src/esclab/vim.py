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

The code is in four modules: :mod:`esclab.vim_registry` (ids, addresses, the files and locks
under ``state_dir``), :mod:`esclab.vim_runner` (the command seam), :mod:`esclab.vim_teardown`
(stopping VMs, :func:`remove_all`) and this one, the driver :class:`LabVim`. The names of the
others are re-exported here, so ``esclab.vim`` keeps working as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import sys
import time
from pathlib import Path

from esc.config.schema import NodePaths
from esc.errors import CommandError
from esc.manager.vim import Vim, VimError, VmInfo, VmSpec
from esclab.vim_registry import (
    MAX_NAME,
    RESPONDER_MODULE,
    VM_PREFIX,
    LabVm,
    LockTimeout,
    Registry,
    VmState,
    _flock,
    allocate,
    check_name,
    is_responder,
    list_vms,
    peer_name,
    vm_id,
)
from esclab.vim_runner import Completed, Runner, SubprocessRunner
from esclab.vim_settings import LabVimSettings, load_settings
from esclab.vim_teardown import _teardown, remove_all, remove_all_blocking

__all__ = [
    "MAX_NAME",
    "RESPONDER_MODULE",
    "VM_IFACE",
    "VM_PREFIX",
    "Completed",
    "LabVim",
    "LabVm",
    "LockTimeout",
    "Registry",
    "Runner",
    "SubprocessRunner",
    "VmState",
    "allocate",
    "build_lab_vim",
    "check_name",
    "is_responder",
    "list_vms",
    "peer_name",
    "remove_all",
    "remove_all_blocking",
    "vm_id",
]

log = logging.getLogger(__name__)

VM_IFACE = "eth0"  # the VM's interface, inside its namespace


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
