"""Taking lab VMs apart: stopping a VM's responder (only after checking its command line, so a
recycled pid is never signalled), removing its veth and pid file, and :func:`remove_all`, which
clears every VM of a ``state_dir`` when the lab goes down (waiting briefly for each VM's lock,
then removing it anyway, and reporting rather than stopping on a VM it cannot remove).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from pathlib import Path

from esc.errors import CommandError
from esc.manager.vim import VimError
from esclab.vim_registry import (
    LabVm,
    LockTimeout,
    Registry,
    _flock,
    is_responder,
    list_vms,
)
from esclab.vim_runner import Runner, SubprocessRunner

# The logger of esclab.vim, which this code came from: log configuration keeps matching it.
log = logging.getLogger("esclab.vim")

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
