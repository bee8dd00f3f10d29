"""The lab VIM's command seam: every side effect of the lab VIM outside its state directory
goes through a :class:`Runner` — running a command (no shell), reading a process's command line,
signalling a process. :class:`SubprocessRunner` is the real one (asyncio subprocesses with a
timeout, killed and reaped when they overrun or the caller is cancelled; ``/proc``;
``os.kill``); the unit tests use a fake one that simulates ``unshare``, ``ip`` and ``nsenter``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from esc.errors import CommandError


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
