"""Child processes the agent supervises (keepalived, esc-manager).

Children get PR_SET_PDEATHSIG=SIGTERM: if the agent dies (kill -9 included), keepalived stops
cleanly (priority-0 advert, VIP removed) and the peer takes over at once. A node without a
live agent must not be primary. PDEATHSIG fires when the *thread* that forked exits, so
children are only ever started from the agent's main thread.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from esc.errors import CommandError

# util-linux setpriv sets the parent-death signal and execs the program: no preexec_fn (unsafe
# in a threaded process).
DIE_WITH_PARENT = ["setpriv", "--pdeathsig", "TERM", "--"]


class Child:
    """One supervised child process, logging to a file."""

    def __init__(
        self, name: str, argv: Sequence[str], log_file: Path, env: dict[str, str] | None = None
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_file = log_file
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def is_alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        if self.is_alive():
            return
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as log:
            self.proc = subprocess.Popen(
                [*DIE_WITH_PARENT, *self.argv],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                process_group=0,  # signals meant for the agent's terminal don't reach it
                env=self.env,
                close_fds=True,
            )
        self.starts += 1

    def stop(self, timeout: float = 5.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        self.proc = None


@dataclass(frozen=True)
class Result:
    returncode: int
    stdout: str
    stderr: str


def run(
    argv: Sequence[str], check: bool = True, timeout: float = 60.0, input_: str | None = None
) -> Result:
    """Run a short command (never through a shell, stdin closed unless ``input_``); raise
    CommandError on failure when ``check``. The one runner of the agent, drivers and lab."""
    full = list(argv)
    try:
        proc = subprocess.run(
            full,
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input_,
            stdin=None if input_ is not None else subprocess.DEVNULL,
            check=False,
        )
    except OSError as exc:
        raise CommandError(full, 127, str(exc)) from exc
    except subprocess.TimeoutExpired as exc:
        raise CommandError(full, -1, f"timed out after {timeout}s") from exc
    if check and proc.returncode != 0:
        raise CommandError(full, proc.returncode, proc.stderr or proc.stdout)
    return Result(proc.returncode, proc.stdout, proc.stderr)
