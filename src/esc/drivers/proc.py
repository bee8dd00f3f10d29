"""Child processes: the ones the agent supervises (keepalived, esc-manager), the project's one
runner of short commands (:func:`run`) and of long ones read as they go (:func:`run_streaming`),
and the one liveness check of a PID (:func:`pid_is_live`).

Children get PR_SET_PDEATHSIG=SIGTERM: if the agent dies (kill -9 included), keepalived stops
cleanly (priority-0 advert, VIP removed) and the peer takes over at once. A node without a
live agent must not be primary. PDEATHSIG fires when the *thread* that forked exits, so
children are only ever started from the agent's main thread.
"""

from __future__ import annotations

import logging
import os
import pwd
import shlex
import subprocess
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from esc.errors import CommandError
from esc.files import open_append

log = logging.getLogger(__name__)

# util-linux setpriv sets the parent-death signal and execs the program: no preexec_fn (unsafe
# in a threaded process).
DIE_WITH_PARENT = ["setpriv", "--pdeathsig", "TERM", "--"]


class Child:
    """One supervised child process, logging to a file."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_file: Path,
        env: dict[str, str] | None = None,
        setpriv: Sequence[str] = (),
    ) -> None:
        """``setpriv``: more options for util-linux setpriv (a user to run as:
        :func:`esc.accounts.setpriv_drop`)."""
        self.name = name
        self.argv = list(argv)
        self.setpriv = list(setpriv)
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
        with os.fdopen(open_append(self.log_file), "ab") as log:  # 0640, no symlink
            self.proc = subprocess.Popen(
                [*DIE_WITH_PARENT[:-1], *self.setpriv, "--", *self.argv],
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


def as_user(argv: Sequence[str], user: str | None) -> list[str]:
    """``argv`` run as the OS user ``user`` (through ``runuser``) unless we already are that
    user; unchanged without one. An unknown user: CommandError (nothing was run)."""
    full = list(argv)
    if user is None:
        return full
    try:
        uid = pwd.getpwnam(user).pw_uid
    except KeyError as exc:
        raise CommandError(full, 127, f"no OS user {user!r}") from exc
    return full if os.geteuid() == uid else ["runuser", "-u", user, "--", *full]


def run(
    argv: Sequence[str],
    check: bool = True,
    timeout: float = 60.0,
    input_: str | None = None,
    *,
    user: str | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    ok_codes: Collection[int] = (0,),
) -> Result:
    """Run a short command (never through a shell, stdin closed unless ``input_``); raise
    CommandError when ``check`` and its exit code is not in ``ok_codes``. ``user``: run as
    that OS user (:func:`as_user`); ``env``: the whole environment (default: ours). The one
    runner of the agent, drivers and lab."""
    full = as_user(argv, user)
    log.debug("run %s", shlex.join(full))
    try:
        proc = subprocess.run(
            full,
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input_,
            stdin=None if input_ is not None else subprocess.DEVNULL,
            env=env,
            cwd=cwd,
            check=False,
        )
    except OSError as exc:
        raise CommandError(full, 127, str(exc)) from exc
    except subprocess.TimeoutExpired as exc:
        raise CommandError(full, -1, f"timed out after {timeout:.0f} s") from exc
    if check and proc.returncode not in ok_codes:
        raise CommandError(full, proc.returncode, proc.stderr or proc.stdout)
    return Result(proc.returncode, proc.stdout, proc.stderr)


def run_streaming(
    argv: Sequence[str],
    read_stderr: Callable[[IO[bytes]], str],
    *,
    timeout: float,
    user: str | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
) -> None:
    """Run a long command whose stderr is read while it runs: ``read_stderr`` gets the stream
    and returns what of it explains a failure. stdout is discarded, stdin closed. A watchdog
    kills the command after ``timeout`` (reading blocks until the command exits), and it is
    killed as well if ``read_stderr`` raises. A non-zero exit: CommandError."""
    full = as_user(argv, user)
    log.debug("run %s", shlex.join(full))
    try:
        proc = subprocess.Popen(
            full,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
            cwd=cwd,
        )
    except OSError as exc:
        raise CommandError(full, 127, str(exc)) from exc
    watchdog = threading.Timer(timeout, proc.kill)
    watchdog.start()
    try:
        assert proc.stderr is not None
        tail = read_stderr(proc.stderr)
        rc = proc.wait()
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
    if rc != 0:
        raise CommandError(full, rc, tail or f"exit {rc} (killed after a timeout?)")


def parse_proc_stat(text: str) -> tuple[str, str]:
    """(command name, state letter) of a ``/proc/<pid>/stat`` line. The name is in
    parentheses and may itself hold ``)`` or spaces, so the state follows the last ``)``."""
    name = text[text.find("(") + 1 : text.rfind(")")]
    tail = text.rpartition(")")[2].split()
    return name, tail[0] if tail else "?"


def pid_is_live(pid: int, names: Collection[str] = ()) -> bool:
    """``pid`` is a live process, not a zombie (dead, not yet reaped: a slow init reaps late,
    and ``kill(pid, 0)`` takes a zombie for alive); with ``names``, one of these programs
    (``/proc/<pid>/comm``, 15 characters at most)."""
    try:
        name, state = parse_proc_stat(Path(f"/proc/{pid}/stat").read_text())
    except OSError:
        return False
    return state not in ("Z", "X", "?") and (not names or name in names)
