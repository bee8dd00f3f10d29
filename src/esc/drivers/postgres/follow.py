"""Becoming a standby of the new primary: reconfigure, rewind (the diverged WAL kept first) or
re-clone, and which of them it takes. The source is reached before anything local is touched.
"""

from __future__ import annotations

import contextlib
import logging
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from esc.drivers.base import FollowResult, Progress
from esc.drivers.postgres.conf import passfile_text, render_standby_auto_conf
from esc.drivers.postgres.forensics import Forensics
from esc.drivers.postgres.process import Server
from esc.drivers.postgres.session import Sessions, is_connection_failure
from esc.drivers.postgres.settings import (
    BASEBACKUP_TIMEOUT_S,
    REPL_ROLE,
    STANDBY_START_TIMEOUT_S,
    PgNode,
)
from esc.drivers.postgres.status import format_lsn, parse_lsn
from esc.drivers.postgres.tools import PgTools
from esc.errors import CommandError, DbError
from esc.model import DbRole

log = logging.getLogger("esc.drivers.postgres")


@dataclass(frozen=True)
class RewindCheck:
    """What ``pg_rewind`` said about the two histories."""

    needed: bool
    diverged_lsn: int | None = None
    diverged_tli: int | None = None


_DIVERGED = re.compile(r"servers diverged at WAL location ([0-9A-F]+/[0-9A-F]+) on timeline (\d+)")


def parse_rewind_output(text: str) -> RewindCheck:
    """Read pg_rewind's (C locale) messages. Raises ValueError when it said neither."""
    m = _DIVERGED.search(text)
    needed = "no rewind required" not in text
    if m is None and needed:
        raise ValueError("pg_rewind printed neither a divergence point nor 'no rewind required'")
    if m is None:
        return RewindCheck(needed=False)
    return RewindCheck(needed=needed, diverged_lsn=parse_lsn(m[1]), diverged_tli=int(m[2]))


class Follower:
    """The follow algorithm of one node (:meth:`follow`) and its steps."""

    def __init__(
        self,
        node: PgNode,
        tools: PgTools,
        sessions: Sessions,
        server: Server,
        forensics: Forensics,
    ) -> None:
        self.node = node
        self.tools = tools
        self.sessions = sessions
        self.server = server
        self.forensics = forensics

    def follow(self, primary_host: str, progress: Progress | None = None) -> FollowResult:
        """Become a streaming standby of ``primary_host`` (on ``peer_port``).

        Already streaming from it: "none". Otherwise the source is reached first (nothing local
        is touched while the new primary is unreachable), asked to CHECKPOINT (gotcha 4: else
        pg_rewind sees one timeline and silently does nothing), then pg_rewind --dry-run decides:
        no divergence -> "reconfigure"; divergence -> the local WAL after the divergence point
        is dumped to ``data_root/diverged/`` and the node is rewound -> "rewind". No cluster,
        or a failed rewind -> "reclone" (pg_basebackup)."""
        probe = self.server.probe()
        if probe.status.role is DbRole.STANDBY and probe.streams_from(
            primary_host, self.node.peer_port
        ):
            return FollowResult("none")
        self.write_passfile()
        self.server.write_tls_files()  # the tools below dial the peer over TLS
        if probe.status.role is DbRole.ABSENT:
            return self.reclone(primary_host, progress)
        with self.timed("checkpoint on the source"):
            self.checkpoint_source(primary_host)
        self.server.stop()
        state = self.tools.controldata().get("Database cluster state")
        if state == "in archive recovery" or (self.node.pgdata / "backup_label").exists():
            # A crashed standby, or a clone that never started (backup_label, control file
            # copied "in production"): its WAL is a prefix of the primary's. Single-user crash
            # recovery would end recovery and write a checkpoint of its own, diverging it on the
            # same timeline where pg_rewind cannot see it; start it as a standby instead.
            return self.reconfigure(primary_host, progress)
        try:
            with self.timed("crash recovery"):
                self.server.ensure_clean_shutdown()
            check = self.rewind_check(primary_host)
        except CommandError as exc:
            if is_connection_failure(exc.stderr):
                # the source went away between CHECKPOINT and pg_rewind: retry later rather
                # than throw the local data away (the node stays stopped meanwhile)
                raise DbError(f"pg_rewind cannot reach {primary_host}: {exc}") from exc
            log.warning("%s: cannot rewind (%s); re-cloning", self.node.node_name, exc)
            return self.reclone(primary_host, progress)
        except ValueError as exc:
            log.warning("%s: cannot rewind (%s); re-cloning", self.node.node_name, exc)
            return self.reclone(primary_host, progress)
        if not check.needed:
            return self.reconfigure(primary_host, progress)
        assert check.diverged_lsn is not None and check.diverged_tli is not None
        with self.timed("preserving diverged WAL"):
            preserved = self.forensics.preserve(
                primary_host, check.diverged_lsn, check.diverged_tli
            )
        try:
            with self.timed("pg_rewind"):
                self.rewind_copy(primary_host, progress)
        except (CommandError, ValueError) as exc:
            log.warning("%s: pg_rewind failed (%s); re-cloning", self.node.node_name, exc)
            self.reclone(primary_host, progress)
            return FollowResult("reclone", preserved, check.diverged_lsn)
        with self.timed("start as standby"):
            self.become_standby(primary_host)
        return FollowResult("rewind", preserved, check.diverged_lsn)

    @contextlib.contextmanager
    def timed(self, step: str) -> Iterator[None]:
        """Log how long one step of a rejoin took (where the time of a rewind goes)."""
        started = time.monotonic()
        try:
            yield
        finally:
            log.info("%s: %s: %.2f s", self.node.node_name, step, time.monotonic() - started)

    def write_passfile(self) -> None:
        self.node.require_password()
        self.node.data_root.mkdir(parents=True, exist_ok=True)
        self.tools.write_file(self.node.passfile, passfile_text(REPL_ROLE, self.node.password))

    def checkpoint_source(self, host: str) -> None:
        """CHECKPOINT on the new primary, so its control file shows the new timeline."""
        with self.sessions.peer_session(host) as conn:
            self.sessions.exec(conn, "CHECKPOINT")

    def rewind_check(self, host: str) -> RewindCheck:
        """``pg_rewind --dry-run``: is a rewind needed, and where did the histories fork?"""
        argv = [self.node.bin("pg_rewind"), "-D", str(self.node.pgdata)]
        argv += [f"--source-server={self.sessions.source_conninfo(host)}", "--dry-run"]
        started = time.monotonic()
        proc = self.tools.run(argv, timeout=3600)
        check = parse_rewind_output(proc.stdout + proc.stderr)
        log.info(
            "%s: pg_rewind --dry-run: %.2f s: %s",
            self.node.node_name,
            time.monotonic() - started,
            "diverged at " + format_lsn(check.diverged_lsn)
            if check.diverged_lsn is not None and check.needed
            else "no rewind required",
        )
        return check

    def rewind_copy(self, host: str, progress: Progress | None) -> None:
        """The real pg_rewind, its progress reported as "rewinding" (a dry run decided that
        one is needed)."""
        argv = [self.node.bin("pg_rewind"), "-D", str(self.node.pgdata)]
        argv += [f"--source-server={self.sessions.source_conninfo(host)}", "--progress"]
        self.tools.run_with_progress(argv, "rewinding", progress, 3600)

    def reconfigure(self, host: str, progress: Progress | None) -> FollowResult:
        """Point the existing data at ``host`` and start it as a standby. If it never reaches
        a consistent state (its data is ahead of the new primary's history), re-clone, keeping
        the old directory: it may hold writes the new primary lacks."""
        try:
            self.become_standby(host, start_timeout=STANDBY_START_TIMEOUT_S)
        except (DbError, CommandError) as exc:
            log.warning(
                "%s: standby did not start after reconfigure (%s); re-cloning",
                self.node.node_name,
                exc,
            )
            self.server.stop_immediate()
            return self.reclone(host, progress, keep_old=True)
        return FollowResult("reconfigure")

    def become_standby(self, host: str, start_timeout: int | None = None) -> None:
        """Rewrite auto.conf whole, create standby.signal, start, drop the stale peer slot."""
        self.tools.write_file(
            self.node.pgdata / "postgresql.auto.conf",
            render_standby_auto_conf(self.sessions.primary_conninfo(host), self.node.own_slot),
        )
        (self.node.pgdata / "recovery.signal").unlink(missing_ok=True)
        self.tools.write_file(self.node.pgdata / "standby.signal", "")
        self.server.start(timeout=start_timeout)
        self.drop_stale_peer_slot()

    def drop_stale_peer_slot(self) -> None:
        """A former primary keeps its slot for the peer (pg_rewind leaves pg_replslot alone);
        on a standby it would pin WAL forever. promote() recreates it when needed."""
        try:
            with self.sessions.session() as conn:
                self.sessions.exec(
                    conn,
                    "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
                    " WHERE slot_name = %s AND NOT active",
                    [self.node.peer_slot],
                )
        except DbError as exc:
            log.warning(
                "%s: could not drop stale slot %s: %s",
                self.node.node_name,
                self.node.peer_slot,
                exc,
            )

    def reclone(self, host: str, progress: Progress | None, keep_old: bool = False) -> FollowResult:
        """pg_basebackup into an empty data dir. A former primary's dir is moved aside under
        ``diverged/`` first (it may hold transactions the source lacks); a standby's is
        removed (everything in it came from a primary)."""
        preserved: Path | None = None
        if self.server.has_cluster():
            self.server.stop()
            state = self.tools.controldata().get("Database cluster state", "")
            if "recovery" in state and not keep_old:
                shutil.rmtree(self.node.pgdata)
            else:
                self.node.diverged_dir.mkdir(parents=True, exist_ok=True)
                stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
                preserved = self.node.diverged_dir / f"pgdata-{stamp}"
                self.node.pgdata.rename(preserved)
                log.warning("%s: old data directory kept in %s", self.node.node_name, preserved)
        elif self.node.pgdata.exists():
            shutil.rmtree(self.node.pgdata)  # an initdb or clone that failed half way
        self.node.data_root.mkdir(parents=True, exist_ok=True)
        self.tools.ensure_dir(self.node.pgdata, 0o700)
        started = time.monotonic()
        self.basebackup(host, progress)
        log.info("%s: cloned in %.2f s", self.node.node_name, time.monotonic() - started)
        self.become_standby(host)
        return FollowResult("reclone", preserved)

    def source_slot_exists(self, host: str) -> bool:
        """Whether our slot exists on the source. An active one is waited for (up to 10 s,
        twice wal_sender_timeout): our own walreceiver, just stopped, may still hold it."""
        deadline = time.monotonic() + 10
        with self.sessions.peer_session(host) as conn:
            while True:
                rows = self.sessions.exec(
                    conn,
                    "SELECT active FROM pg_replication_slots WHERE slot_name = %s",
                    [self.node.own_slot],
                )
                if not (rows and rows[0][0]):
                    return bool(rows)
                if time.monotonic() > deadline:
                    raise DbError(
                        f"slot {self.node.own_slot} on {host} is in use by another client"
                    )
                time.sleep(0.1)

    def basebackup(self, host: str, progress: Progress | None) -> None:
        """pg_basebackup -X stream into our slot (created by -C if the source lacks it), with
        --progress parsed into ``progress("cloning", done, total)``."""
        argv = [self.node.bin("pg_basebackup"), "-d", self.sessions.source_conninfo(host)]
        argv += [
            "-D",
            str(self.node.pgdata),
            "-X",
            "stream",
            "-c",
            "fast",
            "-S",
            self.node.own_slot,
        ]
        if not self.source_slot_exists(host):
            argv.append("-C")
        argv.append("--progress")
        self.tools.run_with_progress(argv, "cloning", progress, BASEBACKUP_TIMEOUT_S)
