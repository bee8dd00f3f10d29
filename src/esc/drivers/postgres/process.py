"""The server's process and its files: pg_ctl start and stop, the pid file (a live
postmaster, or a stale file to clear), the access files rewritten before every start, crash
recovery and statements in single-user mode.
"""

from __future__ import annotations

import errno
import grp
import logging
import os

from esc.drivers.postgres.conf import render_hba, render_ident, server_options
from esc.drivers.postgres.session import Sessions
from esc.drivers.postgres.settings import START_TIMEOUT_S, STOP_TIMEOUT_S, PgNode
from esc.drivers.postgres.status import STATUS_SQL, Probe, probe_from_row
from esc.drivers.postgres.tools import PgTools
from esc.drivers.proc import pid_is_live
from esc.errors import CommandError, ConfigError, DbError
from esc.files import open_append, read_nofollow
from esc.model import DbRole, DbStatus

log = logging.getLogger("esc.drivers.postgres")

POSTGRES_NAMES = ("postgres", "postmaster")  # /proc/<pid>/comm of a server process


def parse_pid_file(text: str) -> tuple[int, str] | None:
    """postmaster.pid -> (pid, status word), status '' while the server is still writing it.

    Line 1 is the PID, line 8 the state (``starting``, ``stopping``, ``ready``, ``standby``)."""
    lines = text.splitlines()
    if not lines or not lines[0].strip().isdigit():
        return None
    status = lines[7].strip() if len(lines) >= 8 else ""
    return int(lines[0]), status


class Server:
    """The local cluster's server process and the files around it."""

    def __init__(self, node: PgNode, tools: PgTools, sessions: Sessions) -> None:
        self.node = node
        self.tools = tools
        self.sessions = sessions

    def has_cluster(self) -> bool:
        return (self.node.pgdata / "PG_VERSION").is_file()

    def postmaster(self) -> tuple[int, str] | None:
        """(pid, status) of a live postmaster, or None. A crash leaves a stale postmaster.pid;
        the PID must be alive and be a postgres process, else the server is stopped."""
        try:
            parsed = parse_pid_file(read_nofollow(self.node.pgdata / "postmaster.pid"))
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            return None
        except OSError as exc:
            if exc.errno != errno.ELOOP:  # a symlink planted in postgres's directory
                raise
            return None
        if parsed is None:
            return None
        return parsed if pid_is_live(parsed[0], POSTGRES_NAMES) else None

    def probe(self) -> Probe:
        """One bounded look: files first (absent/stopped in microseconds), then one query."""
        if not self.has_cluster():
            return Probe(DbStatus(DbRole.ABSENT))
        pm = self.postmaster()
        if pm is None or pm[1] not in ("ready", "standby"):
            return Probe(DbStatus(DbRole.STOPPED))  # starting/stopping: not usable yet
        return probe_from_row(self.sessions.status_row(STATUS_SQL))

    def start(self, timeout: int | None = None) -> None:
        """Start the cluster if it is not running (hba rewritten first). Waits until ready."""
        wait_s = timeout or START_TIMEOUT_S
        if not self.has_cluster():
            raise DbError(f"cannot start: no cluster in {self.node.pgdata}")
        if self.postmaster() is not None:
            return
        self.clear_stale_pid_file()
        self.prepare_runtime()
        argv = [
            self.node.bin("pg_ctl"),
            "start",
            "-D",
            str(self.node.pgdata),
            "-l",
            str(self.node.log_file),
            "-o",
            server_options(
                self.node.node_name,
                self.node.port,
                self.node.socket_dir,
                self.node.listen,
                self.node.tls_dir,
                self.node.app_group,
            ),
            "-w",
            "-t",
            str(wait_s),
        ]
        self.tools.run(argv, timeout=wait_s + 10)

    def stop(self) -> None:
        """Fast shutdown, bounded: after STOP_TIMEOUT_S it escalates to an immediate stop."""
        self.sessions.close()
        if self.postmaster() is None:
            return
        try:
            self.pg_ctl_stop("fast", STOP_TIMEOUT_S)
        except CommandError as exc:
            log.warning("%s: fast stop failed (%s); stopping immediately", self.node.node_name, exc)
            self.stop_immediate()

    def stop_immediate(self) -> None:
        """Like a crash (recovery on next start). For escalation and tests."""
        self.sessions.close()
        if self.postmaster() is None:
            return
        self.pg_ctl_stop("immediate", 15)

    def pg_ctl_stop(self, mode: str, timeout: int) -> None:
        argv = [self.node.bin("pg_ctl"), "stop", "-D", str(self.node.pgdata), "-m", mode]
        self.tools.run([*argv, "-w", "-t", str(timeout)], timeout=timeout + 10)

    def clear_stale_pid_file(self) -> None:
        """Remove a postmaster.pid whose process is dead but not yet reaped (a zombie): the
        server's own check (kill(pid, 0)) takes a zombie for a live postmaster and refuses to
        start, and a slow init can leave one for seconds. A live postmaster's file is kept."""
        pid_file = self.node.pgdata / "postmaster.pid"
        try:
            parsed = parse_pid_file(read_nofollow(pid_file))
        except OSError:
            return
        if parsed is not None and self.postmaster() is None:
            log.info(
                "%s: removing the stale postmaster.pid of dead pid %d",
                self.node.node_name,
                parsed[0],
            )
            pid_file.unlink(missing_ok=True)
        # The socket's lock file has the same check (and the same zombie in it).
        sock_lock = self.node.socket_dir / f".s.PGSQL.{self.node.port}.lock"
        try:
            first = read_nofollow(sock_lock).split("\n", 1)[0].strip()
        except OSError:
            return
        pid = int(first) if first.lstrip("-").isdigit() else 0
        if pid and not pid_is_live(abs(pid), POSTGRES_NAMES):
            log.info("%s: removing the stale socket lock of dead pid %d", self.node.node_name, pid)
            sock_lock.unlink(missing_ok=True)

    def prepare_runtime(self) -> None:
        """Before every start: the socket dir (0700: only root and postgres enter it; 0750 with
        the manager's group), the log file and the node-local pg_hba and pg_ident."""
        self.ensure_socket_dir()
        os.close(open_append(self.node.log_file))  # 0640 (pg_ctl -l appends to it)
        self.tools.chown(self.node.log_file)
        self.write_access_files()

    def ensure_socket_dir(self) -> None:
        """postgres's, 0700; with the manager's group, that group's too (2750: setgid, so the
        socket the server makes there belongs to that group), the only other account that
        may enter it."""
        d = self.node.socket_dir
        if self.node.app_group is None:
            self.tools.ensure_dir(d, 0o700)
            return
        try:
            gid = grp.getgrnam(self.node.app_group).gr_gid
        except KeyError:
            raise ConfigError(
                "database",
                f"no group {self.node.app_group!r} for escmanager (the package makes it)",
            ) from None
        self.tools.ensure_dir(d, 0o700)
        if os.geteuid() == 0:
            os.chown(d, -1, gid, follow_symlinks=False)
        os.chmod(d, 0o2750)

    def write_access_files(self) -> None:
        self.write_tls_files()
        hba = render_hba(
            self.node.peer_host, tls=self.node.pki is not None, db_name=self.node.db_name
        )
        self.tools.write_file(self.node.pgdata / "pg_hba.conf", hba)
        self.tools.write_file(
            self.node.pgdata / "pg_ident.conf", render_ident(["root", self.node.os_user])
        )

    def write_tls_files(self) -> None:
        """postgres's copies of ``<etc>/pki``'s CA, certificate and key (the server and the
        tools that run as postgres cannot read root's 0600 key), in ``tls_dir`` (0700)."""
        src, dst = self.node.pki, self.node.tls_dir
        if src is None or dst is None:
            return
        self.tools.ensure_dir(dst, 0o700)
        for name in ("ca.crt", "host.crt", "host.key"):
            try:
                data = (src / name).read_text()
            except OSError as exc:
                raise ConfigError(
                    "pki", f"{src / name}: {exc.strerror} (the pair's certificates)"
                ) from None
            self.tools.write_file(dst / name, data, 0o600)

    def refresh_access(self) -> None:
        """At agent start: a server left running (by an older agent, whose pg_hba had a
        ``trust`` line, and a 0755 socket directory) gets this version's access rules now,
        not at its next restart: the socket directory closed, pg_hba and pg_ident rewritten,
        and the server told to reload them. Nothing to do without a cluster."""
        if not self.has_cluster():
            return
        if self.node.socket_dir.is_dir():
            self.ensure_socket_dir()
        self.write_access_files()
        if self.postmaster() is not None:
            with self.sessions.session() as conn:
                self.sessions.exec(conn, "SELECT pg_reload_conf()")

    def ensure_clean_shutdown(self) -> None:
        """A crashed cluster must finish crash recovery before ``pg_rewind --dry-run`` (which
        refuses it, unlike a real rewind): run it in single-user mode, as pg_rewind itself
        does. Signal files go first: single-user mode refuses standby mode."""
        state = self.tools.controldata().get("Database cluster state", "")
        if state in ("shut down", "shut down in recovery"):
            return
        log.info("%s: cluster state %r; completing crash recovery", self.node.node_name, state)
        self.clear_stale_pid_file()
        for signal_file in ("standby.signal", "recovery.signal"):
            (self.node.pgdata / signal_file).unlink(missing_ok=True)
        argv = [
            self.node.bin("postgres"),
            "--single",
            "-F",
            "-D",
            str(self.node.pgdata),
            "template1",
        ]
        self.tools.run(argv, timeout=3600)

    def single_user(self, dbname: str, statements: list[str]) -> str:
        """Run statements in single-user mode; its output (or error) as text."""
        for signal_file in ("standby.signal", "recovery.signal"):  # refused in single-user
            (self.node.pgdata / signal_file).unlink(missing_ok=True)
        argv = [self.node.bin("postgres"), "--single", "-D", str(self.node.pgdata), dbname]
        try:
            proc = self.tools.run(argv, timeout=600, input_text="\n".join(statements) + "\n")
        except CommandError as exc:
            return f"# single-user mode failed: {exc}"
        return proc.stdout.replace("backend> ", "")
