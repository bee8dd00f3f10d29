"""PostgreSQL's programs and files, handled as its OS user: every tool runs as ``postgres``
(it refuses root) through :func:`esc.drivers.proc.run`, and every file root writes where
postgres could plant a symlink goes through :func:`esc.files.write_atomic`."""

from __future__ import annotations

import os
import pwd
import re
from collections.abc import Collection
from pathlib import Path
from typing import IO

from esc.drivers import proc
from esc.drivers.base import Progress
from esc.drivers.postgres.settings import PgNode
from esc.errors import DbError
from esc.files import write_atomic

_PROGRESS = re.compile(r"(\d+)/(\d+) kB")


def parse_basebackup_progress(chunk: str) -> tuple[int, int] | None:
    """``'  1234/23456 kB (5%), 0/1 tablespace'`` -> (1263616, 24018944) bytes, or None."""
    m = _PROGRESS.search(chunk)
    if m is None:
        return None
    return int(m[1]) * 1024, int(m[2]) * 1024


def read_progress(stderr: IO[bytes], operation: str, progress: Progress | None) -> str:
    """Split a copying tool's stderr on CR/LF; report its ``--progress`` lines ("N/M kB") as
    ``progress(operation, done, total)`` and return the last of the other lines."""
    buf = b""
    other: list[str] = []
    last: tuple[int, int] | None = None
    while chunk := os.read(stderr.fileno(), 4096):
        buf += chunk
        *parts, buf = re.split(rb"[\r\n]", buf)
        for part in parts:
            line = part.decode(errors="replace")
            seen = parse_basebackup_progress(line)
            if seen is None:
                if line.strip():
                    other.append(line)
                continue
            last = seen
            if progress is not None:
                progress(operation, *seen)
    if progress is not None and last is not None:
        progress(operation, last[1], last[1])
    return "\n".join(other[-20:])


def pg_env() -> dict[str, str]:
    """C messages (pg_rewind's output is parsed), no inherited PG* variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(LC_ALL="C", LANG="C", PGCONNECT_TIMEOUT="5")
    return env


class PgTools:
    """The programs in the node's bindir and the files its server reads."""

    def __init__(self, node: PgNode) -> None:
        self.node = node

    def ids(self) -> tuple[int, int]:
        """(uid, gid) of the server's OS user; DbError if there is none."""
        try:
            pw = pwd.getpwnam(self.node.os_user)
        except KeyError as exc:
            raise DbError(f"no OS user {self.node.os_user!r}") from exc
        return pw.pw_uid, pw.pw_gid

    def run(
        self,
        argv: list[str],
        *,
        timeout: float,
        ok_codes: Collection[int] = (0,),
        input_text: str | None = None,
    ) -> proc.Result:
        """Run a PostgreSQL tool as the postgres user (from ``/``: it cannot enter root's
        cwd); failure -> CommandError."""
        self.ids()  # a missing OS user is a DbError, before anything runs
        return proc.run(
            argv,
            timeout=timeout,
            input_=input_text,
            user=self.node.os_user,
            env=pg_env(),
            cwd="/",
            ok_codes=ok_codes,
        )

    def run_with_progress(
        self, argv: list[str], operation: str, progress: Progress | None, timeout_s: float
    ) -> None:
        """Run a copying tool as postgres with its ``--progress`` lines on stderr reported as
        ``progress(operation, done, total)``; failure -> CommandError."""
        self.ids()
        proc.run_streaming(
            argv,
            lambda stderr: read_progress(stderr, operation, progress),
            timeout=timeout_s,
            user=self.node.os_user,
            env=pg_env(),
            cwd="/",
        )

    def controldata(self) -> dict[str, str]:
        """``pg_controldata`` of the local cluster."""
        out = self.run([self.node.bin("pg_controldata"), "-D", str(self.node.pgdata)], timeout=30)
        return parse_controldata(out.stdout)

    def chown(self, path: Path) -> None:
        """By path: only for what sits in a directory postgres cannot change (the socket
        directory in <run>, the data directory itself in <data>, the log in <log>)."""
        uid, gid = self.ids()
        if os.geteuid() == 0:
            os.chown(path, uid, gid, follow_symlinks=False)

    def write_file(self, path: Path, text: str, mode: int = 0o600) -> None:
        """Atomically write a file the server reads, owned by postgres. The data directory
        belongs to postgres, so every name in it may be a symlink planted by that user:
        :func:`esc.files.write_atomic` creates a random name with O_EXCL|O_NOFOLLOW, fchowns
        the descriptor (the server never sees a root-owned file it cannot read) and renames,
        so root never writes through or hands over anything outside."""
        owner = self.ids() if os.geteuid() == 0 else None
        write_atomic(path, text, mode, owner=owner)

    def ensure_dir(self, path: Path, mode: int) -> None:
        path.mkdir(parents=True, exist_ok=True)
        os.chmod(path, mode)
        self.chown(path)


def parse_controldata(text: str) -> dict[str, str]:
    """``pg_controldata`` output as a dict (``'Database cluster state' -> 'shut down'``)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out[key.strip()] = value.strip()
    return out
