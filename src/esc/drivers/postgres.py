"""The real PostgreSQL 15 driver: the local cluster of one node, run as the ``postgres`` OS user.

Rules this module keeps:

- Node-specific settings (``cluster_name``, ``port``, ``unix_socket_directories``,
  ``listen_addresses``) go on the ``pg_ctl -o`` line, never into a conf file: pg_basebackup and
  pg_rewind copy the conf files from the peer, and a copied ``cluster_name`` would make both nodes
  claim the same ``application_name``. ``pg_hba.conf`` is rewritten before every start for the
  same reason.
- ``postgresql.conf`` carries only what is identical on both nodes, including the symmetric
  ``synchronous_standby_names = 'FIRST 1 ("a", "b")'`` (a node never matches itself).
  ``postgresql.auto.conf`` is node state: it is rewritten whole whenever the node becomes a
  standby (pg_rewind copies the source's file, PROBE-NOTES gotcha 6).
- The driver never enters a network namespace: its caller already runs inside the node's one.
- The replication password never appears in an argv (``ps``), a log line or SQL text: children
  read a 0600 passfile, psycopg gets it as a keyword, and the role is given a SCRAM verifier
  computed by libpq on the client.
- Every psycopg and subprocess failure leaves as :class:`DbError` or :class:`CommandError`.
- No local path to the superuser: the unix socket takes ``peer`` authentication only, with
  the map ``esc`` (OS user ``root`` or ``postgres`` -> database user ``postgres``), and its
  directory is 0700, owned by postgres, the socket itself 0700. Every other local account is
  refused by the directory first and by pg_hba second.
- Root never follows a path the postgres user controls: files in the (postgres-owned) data
  directory are written by :func:`esc.files.write_atomic` (random ``O_EXCL|O_NOFOLLOW`` name,
  ``fchown`` on the descriptor, rename) and read with :func:`esc.files.read_nofollow`.
- Diverged local WAL is dumped to ``data_root/diverged/`` before pg_rewind destroys it.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import logging
import os
import pwd
import re
import shlex
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from esc.config.schema import EscConfig, NodePaths
from esc.drivers.base import Database, FollowResult, Progress
from esc.drivers.volume import mountpoint_of
from esc.errors import CommandError, ConfigError, DbError
from esc.files import read_nofollow, write_atomic
from esc.model import DbRole, DbStatus, fmt_lsn

log = logging.getLogger(__name__)

REPL_ROLE = "replicator"
SUPERUSER = "postgres"  # the database superuser every local connection of ours uses
IDENT_MAP = "esc"  # pg_ident.conf: the OS users that may connect as SUPERUSER (peer auth)
CONF_BEGIN = "# --- ESC-HA shared settings: begin (written by esc, identical on both nodes) ---"
CONF_END = "# --- ESC-HA shared settings: end ---"
# pg_rewind --source-server needs these (or superuser); PG 15 docs, "pg_rewind" notes.
REWIND_FUNCTIONS = (
    "pg_catalog.pg_ls_dir(text, boolean, boolean)",
    "pg_catalog.pg_stat_file(text, boolean)",
    "pg_catalog.pg_read_binary_file(text)",
    "pg_catalog.pg_read_binary_file(text, bigint, bigint, boolean)",
)


# --- pure helpers (no I/O; unit-tested in tests/unit/test_postgres_pure.py) -------------------


def parse_lsn(text: str) -> int:
    """``'0/3000060'`` -> 50331744. Raises ValueError on anything else."""
    hi, sep, lo = text.strip().partition("/")
    if not sep or not hi or not lo:
        raise ValueError(f"{text!r} is not an LSN")
    return (int(hi, 16) << 32) | int(lo, 16)


format_lsn = fmt_lsn  # 50331744 -> '0/3000060' (esc.model: one spelling project-wide)


def slot_name(node_name: str) -> str:
    """A node's replication slot: its name in lower case, every other character ``_``.

    Slot names allow only ``[a-z0-9_]``; node names may hold ``-`` and ``.``."""
    return re.sub(r"[^a-z0-9_]", "_", node_name.lower())[:63]


def quote_ident(name: str) -> str:
    """Double-quote an identifier (as in ``synchronous_standby_names``)."""
    return '"' + name.replace('"', '""') + '"'


def conf_quote(value: str) -> str:
    """A postgresql.conf string literal. The conf parser de-escapes backslashes, so double them
    (a passfile path with a backslash would otherwise change meaning)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def passfile_escape(field: str) -> str:
    """Escape ``\\`` and ``:`` for one field of a libpq passfile line."""
    return field.replace("\\", "\\\\").replace(":", "\\:")


def passfile_text(user: str, password: str) -> str:
    """One line matching every host, port and database (``replication`` included) for ``user``."""
    return f"*:*:*:{passfile_escape(user)}:{passfile_escape(password)}\n"


def sync_names_value(standby_name: str | None) -> str:
    """The ``synchronous_standby_names`` value naming one standby ('' = asynchronous)."""
    return "" if standby_name is None else quote_ident(standby_name)


def pair_sync_names(a: str, b: str) -> str:
    """The symmetric value for the shared postgresql.conf: a node never matches itself, so both
    nodes carry the same line and each waits for the other."""
    first, second = sorted((a, b))
    return f"FIRST 1 ({quote_ident(first)}, {quote_ident(second)})"


def hba_address(host: str) -> str:
    """``192.0.2.11`` -> ``192.0.2.11/32``; ``2001:db8::b`` -> ``2001:db8::b/128``.

    pg_hba needs an address with mask; a host name would be resolved on every connection."""
    addr = ipaddress.ip_address(host.strip("[]"))
    return f"{addr}/{addr.max_prefixlen}"


def render_hba(peer_host: str) -> str:
    """The local superuser by socket with ``peer`` authentication (the OS user the kernel
    reports must be in the ``esc`` map: :func:`render_ident`), the replication role from the
    peer only. No ``trust`` line: a local account that reaches the socket is still refused."""
    peer = hba_address(peer_host)
    return (
        "# Written by esc before every start; node-local (pg_basebackup and pg_rewind copy\n"
        "# this file from the peer, so it is never trusted as found).\n"
        "# TYPE  DATABASE     USER        ADDRESS  METHOD\n"
        f"local   all          {SUPERUSER}             peer map={IDENT_MAP}\n"
        f"host    all          {REPL_ROLE}  {peer}  scram-sha-256\n"
        f"host    replication  {REPL_ROLE}  {peer}  scram-sha-256\n"
    )


def render_ident(os_users: Sequence[str]) -> str:
    """pg_ident.conf: the OS users that connect as the superuser over the socket. ``root``
    (the agent, escadm, esc-manager run as root) and the server's own user (``runuser -u
    postgres -- psql``). Rewritten before every start, like pg_hba."""
    names: list[str] = []
    for name in os_users:
        if not re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}", name):
            raise ConfigError("os_user", f"{name!r} is not a plain user name")
        if name not in names:
            names.append(name)
    lines = "".join(f"{IDENT_MAP}  {n}  {SUPERUSER}\n" for n in names)
    return (
        "# Written by esc before every start (node-local, never trusted as copied).\n"
        "# MAPNAME  SYSTEM-USERNAME  PG-USERNAME\n" + lines
    )


def render_shared_conf(
    node_a: str, node_b: str, *, replicated: bool = True, slot_keep_mb: int = 4096
) -> str:
    """The ESC-HA block of postgresql.conf, identical on both nodes (it is copied by clone and
    rewind). Node-specific settings are on the pg_ctl command line instead. ``replicated``
    False (``cinder`` mode: one cluster on a shared volume) commits without a standby."""
    sync_names = pair_sync_names(node_a, node_b) if replicated else ""
    settings = [
        ("wal_level", "replica"),
        ("wal_log_hints", "on"),  # pg_rewind needs hint-bit WAL (checksums are on as well)
        ("full_page_writes", "on"),
        ("max_wal_senders", "10"),
        ("max_replication_slots", "10"),
        ("wal_keep_size", "'256MB'"),
        # A standby gone for long keeps WAL in its slot; past this much the slot is given up
        # (the primary's disk matters more) and that standby must be re-cloned.
        ("max_slot_wal_keep_size", f"'{slot_keep_mb}MB'"),
        ("hot_standby", "on"),
        ("hot_standby_feedback", "on"),
        ("synchronous_commit", "on"),
        ("synchronous_standby_names", conf_quote(sync_names)),
        ("password_encryption", "'scram-sha-256'"),
        # Failover in seconds: a dead peer is noticed in 5 s by walsender/walreceiver (and a
        # fast shutdown never waits longer than that for a vanished standby), and a standby
        # retries its primary every second instead of every 5 s.
        ("wal_sender_timeout", "'5s'"),
        ("wal_receiver_timeout", "'5s'"),
        ("wal_receiver_status_interval", "'1s'"),
        ("wal_retrieve_retry_interval", "'1s'"),
        ("log_line_prefix", "'%m [%p] %q%u@%d '"),
    ]
    body = "\n".join(f"{name} = {value}" for name, value in settings)
    return f"{CONF_BEGIN}\n{body}\n{CONF_END}\n"


def merge_conf_block(existing: str, block: str) -> str:
    """Replace the ESC-HA block in ``existing`` (or append it): re-running init is idempotent."""
    start = existing.find(CONF_BEGIN)
    end = existing.find(CONF_END)
    if start >= 0 and end > start:
        tail = existing[end + len(CONF_END) :].lstrip("\n")
        return existing[:start] + block + tail
    sep = "" if existing.endswith("\n") or not existing else "\n"
    return existing + sep + "\n" + block


def render_standby_auto_conf(primary_conninfo: str, slot: str) -> str:
    """The whole postgresql.auto.conf of a standby: nothing from a previous life survives
    (a copied ``primary_conninfo`` would point the node at itself, gotcha 6)."""
    return (
        "# Do not edit this file manually!\n"
        "# It will be overwritten by the ALTER SYSTEM command.\n"
        "# Rewritten by esc when this node became a standby.\n"
        f"primary_conninfo = {conf_quote(primary_conninfo)}\n"
        f"primary_slot_name = {conf_quote(slot)}\n"
    )


def server_options(node_name: str, port: int, socket_dir: Path, listen: str) -> str:
    """The ``pg_ctl -o`` string. pg_ctl hands it to ``/bin/sh``, so every token is shell-quoted."""
    pairs = [
        f"cluster_name={node_name}",  # becomes the walreceiver's application_name
        f"port={port}",
        f"unix_socket_directories={socket_dir}",  # own dir: a shared one collides (gotcha 1)
        "unix_socket_permissions=0700",  # and the directory is 0700: only root and postgres
        f"listen_addresses={listen}",
    ]
    return " ".join(f"-c {shlex.quote(p)}" for p in pairs)


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


_PROGRESS = re.compile(r"(\d+)/(\d+) kB")


def parse_basebackup_progress(chunk: str) -> tuple[int, int] | None:
    """``'  1234/23456 kB (5%), 0/1 tablespace'`` -> (1263616, 24018944) bytes, or None."""
    m = _PROGRESS.search(chunk)
    if m is None:
        return None
    return int(m[1]) * 1024, int(m[2]) * 1024


def parse_controldata(text: str) -> dict[str, str]:
    """``pg_controldata`` output as a dict (``'Database cluster state' -> 'shut down'``)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out[key.strip()] = value.strip()
    return out


def parse_pid_file(text: str) -> tuple[int, str] | None:
    """postmaster.pid -> (pid, status word), status '' while the server is still writing it.

    Line 1 is the PID, line 8 the state (``starting``, ``stopping``, ``ready``, ``standby``)."""
    lines = text.splitlines()
    if not lines or not lines[0].strip().isdigit():
        return None
    status = lines[7].strip() if len(lines) >= 8 else ""
    return int(lines[0]), status


def process_state(proc_stat: str) -> str:
    """The state letter of a ``/proc/<pid>/stat`` line (after the parenthesised comm)."""
    tail = proc_stat.rpartition(")")[2].split()
    return tail[0] if tail else "?"


def pid_is_live_postgres(pid: int) -> bool:
    """``pid`` runs PostgreSQL and is not a zombie (dead, not yet reaped: a slow init reaps
    late, and PostgreSQL's own lock-file check takes a zombie for a live server)."""
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return process_state(stat) not in ("Z", "X") and comm in ("postgres", "postmaster")


def preserved_name(now: datetime, lsn: int) -> str:
    """``diverged-20261127T153000Z-0-3000060.txt``: when, and the divergence LSN."""
    stamp = now.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"diverged-{stamp}-{format_lsn(lsn).replace('/', '-')}.txt"


def _is_connection_failure(stderr: str) -> bool:
    """libpq's words for "the server could not be reached" (C locale)."""
    return any(
        words in stderr
        for words in ("could not connect", "connection to server", "server closed the connection")
    )


def count_waldump_records(text: str) -> int:
    return sum(1 for line in text.splitlines() if line.startswith("rmgr:"))


_COMMIT = re.compile(r"^rmgr: Transaction .*?tx:\s*(\d+),.*desc: COMMIT(?!_PREPARED)(.*)$", re.M)
_SUBXACTS = re.compile(r"subxacts:((?:\s+\d+)+)")


def committed_xids(text: str) -> list[int]:
    """Transaction ids (subtransactions included) that pg_waldump shows committing. Only
    these are data a client may have been told was saved; aborted or unfinished ones are not."""
    xids: dict[int, None] = {}
    for m in _COMMIT.finditer(text):
        xids[int(m[1])] = None
        sub = _SUBXACTS.search(m[2])
        for x in sub[1].split() if sub else ():
            xids[int(x)] = None
    return sorted(xids)


_BLOCKREF = re.compile(r"blkref #\d+: rel (\d+)/(\d+)/(\d+)(?: fork \w+)? blk (\d+)")


def touched_heap_blocks(text: str) -> dict[tuple[int, int, int], list[int]]:
    """(tablespace, database, relfilenode) -> sorted main-fork blocks of Heap/Heap2 records:
    where the diverged rows (inserted or new versions) can be found."""
    out: dict[tuple[int, int, int], set[int]] = {}
    for line in text.splitlines():
        if not line.startswith(("rmgr: Heap ", "rmgr: Heap2 ")):
            continue
        for m in _BLOCKREF.finditer(line):
            if " fork " in m[0]:
                continue
            out.setdefault((int(m[1]), int(m[2]), int(m[3])), set()).add(int(m[4]))
    return {key: sorted(blocks) for key, blocks in out.items()}


def diverged_rows_query(
    spc: int, relfilenode: int, blocks: Sequence[int], xids: Sequence[int]
) -> str:
    """One line of SQL (single-user mode reads one statement per line) printing a relation's
    name and, as XML, its rows written by ``xids`` in ``blocks``. One TID range scan per block
    (UNION ALL), so a large table is not read whole."""
    xid_array = "{" + ",".join(str(x) for x in xids) + "}"
    parts = [
        f"SELECT * FROM %1$s WHERE ctid >= '({b},0)' AND ctid < '({b + 1},0)'"
        f" AND xmin = ANY('{xid_array}'::xid[])"
        for b in blocks
    ]
    inner = " UNION ALL ".join(parts).replace("'", "''")
    return (
        "SELECT c.oid::regclass::text AS relation,"
        f" query_to_xml(format('{inner}', c.oid::regclass), true, false, '') AS rows"
        f" FROM pg_class c WHERE c.oid = pg_filenode_relation({spc}, {relfilenode})"
        " AND c.relkind IN ('r', 'm')"
    )


# --- the driver --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Probe:
    """One look at the server, richer than DbStatus: ``follow`` needs the walreceiver's peer."""

    status: DbStatus
    sender_host: str | None = None
    sender_port: int | None = None


_STATUS_SQL = """
SELECT pg_is_in_recovery(),
       CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()
            ELSE pg_current_wal_lsn() END::text,
       CASE WHEN pg_is_in_recovery() THEN pg_last_wal_receive_lsn() END::text,
       CASE WHEN pg_is_in_recovery() THEN NULL
            ELSE pg_walfile_name(pg_current_wal_lsn()) END,
       (pg_control_checkpoint()).timeline_id,
       w.status, w.received_tli, w.sender_host, w.sender_port,
       (SELECT application_name FROM pg_stat_replication
         WHERE sync_state = 'sync' ORDER BY application_name LIMIT 1),
       current_setting('synchronous_standby_names'),
       CASE WHEN NOT pg_is_in_recovery()
              OR pg_last_wal_receive_lsn() IS NOT DISTINCT FROM pg_last_wal_replay_lsn() THEN 0
            ELSE COALESCE(EXTRACT(epoch FROM now() - pg_last_xact_replay_timestamp()), 0)
       END::float8,
       (SELECT string_agg(application_name, ',') FROM pg_stat_replication
         WHERE state = 'streaming'),
       CASE WHEN NOT pg_is_in_recovery()
            THEN pg_snapshot_xmax(pg_current_snapshot())::text::int8 END,
       CASE WHEN NOT pg_is_in_recovery()
            THEN pg_snapshot_xmin(pg_current_snapshot())::text::int8 END
FROM (SELECT 1) AS one LEFT JOIN pg_stat_wal_receiver AS w ON true
"""


def _shutdown_socket(conn: psycopg.Connection[tuple[Any, ...]], fired: threading.Event) -> None:
    """Unblock a query waiting on a server that does not answer (watchdog callback)."""
    fired.set()
    with contextlib.suppress(OSError, psycopg.Error):
        sock = socket.socket(fileno=os.dup(conn.pgconn.socket))
        try:
            sock.shutdown(socket.SHUT_RDWR)
        finally:
            sock.close()


class PostgresDriver:
    """The local PostgreSQL of one node (implements :class:`esc.drivers.base.Database`)."""

    START_TIMEOUT_S = 60  # pg_ctl start -w: crash recovery of a large WAL backlog included
    STANDBY_START_TIMEOUT_S = 30  # a reconfigured standby that is not consistent by then: re-clone
    STOP_TIMEOUT_S = 30  # fast shutdown; escalates to immediate after this
    PROMOTE_TIMEOUT_S = 60
    BASEBACKUP_TIMEOUT_S = 6 * 3600
    STATUS_TIMEOUT_MS = 2000  # statement_timeout of the status connection (server side)
    STATUS_WATCHDOG_S = 1.5  # client side: a stopped server never enforces statement_timeout

    def __init__(
        self,
        *,
        node_name: str,
        peer_name: str,
        pgdata: Path,
        data_root: Path,
        socket_dir: Path,
        port: int,
        listen: str,
        peer_host: str,
        repl_password: str,
        bindir: Path,
        log_file: Path,
        peer_port: int | None = None,
        db_name: str = "esc",
        os_user: str = "postgres",
        replicated: bool = True,
        slot_keep_mb: int = 4096,
    ) -> None:
        if node_name == peer_name:
            raise ConfigError("node_name", "must differ from the peer's name")
        self.node_name = node_name
        self.peer_name = peer_name
        self.pgdata = pgdata
        self.data_root = data_root
        self.socket_dir = socket_dir
        self.port = port
        self.listen = listen
        self.peer_host = peer_host
        self.peer_port = port if peer_port is None else peer_port
        self._password = repl_password
        self.bindir = bindir
        self.log_file = log_file
        self.db_name = db_name
        self.os_user = os_user
        self.replicated = replicated  # False: cinder mode, no standby, no slot for the peer
        self.slot_keep_mb = slot_keep_mb
        self._conn: psycopg.Connection[tuple[Any, ...]] | None = None

    def __repr__(self) -> str:  # no password
        return f"PostgresDriver({self.node_name!r}, pgdata={str(self.pgdata)!r}, port={self.port})"

    @classmethod
    def from_config(cls, cfg: EscConfig, paths: NodePaths, *, self_addr: str) -> PostgresDriver:
        """Build the driver of the node whose address is ``self_addr``; the peer is the other
        address of ``ha.ha_node_list``. Both names come from ``ha.node_names`` (by position in
        ha_node_list), the same names the agents use: they are the replication application
        names, the slots and ``synchronous_standby_names``."""
        if cfg.ha is None:
            raise ConfigError("ha", "the database driver needs the HA pair (ha.ha_node_list)")
        addrs = [str(a) for a in cfg.ha.ha_node_list]
        own = str(ipaddress.ip_address(self_addr.strip("[]")))
        if own not in addrs:
            raise ConfigError("ha.ha_node_list", f"{own} is not one of {', '.join(addrs)}")
        idx = addrs.index(own)
        peer = addrs[1 - idx]
        names = cfg.ha.node_names
        on_volume = cfg.ha.ha_mode in ("cinder", "drbd_on_cinder")
        return cls(
            node_name=names[idx],
            peer_name=names[1 - idx],
            pgdata=mountpoint_of(paths) / "pgdata" if on_volume else paths.pgdata,
            data_root=paths.data_dir,
            socket_dir=paths.pg_socket_dir,
            port=cfg.database.port,
            listen="*",  # connections to the VIP too; pg_hba limits who may log in
            peer_host=peer,
            repl_password=cfg.replication.password,
            bindir=Path(cfg.database.pg_bindir),
            log_file=paths.log_dir / "postgres.log",
            db_name=cfg.database.name,
            replicated=cfg.ha.ha_mode != "cinder",
            slot_keep_mb=cfg.database.max_slot_wal_keep_size_mb,
        )

    # --- paths and names -----------------------------------------------------------------

    @property
    def own_slot(self) -> str:
        return slot_name(self.node_name)

    @property
    def peer_slot(self) -> str:
        return slot_name(self.peer_name)

    @property
    def passfile(self) -> Path:
        return self.data_root / "pgpass"

    @property
    def diverged_dir(self) -> Path:
        return self.data_root / "diverged"

    def _bin(self, name: str) -> str:
        return str(self.bindir / name)

    # --- Database protocol ---------------------------------------------------------------

    def status(self) -> DbStatus:
        """One bounded look: files first (absent/stopped in microseconds), then one query."""
        return self._probe().status

    def init_primary(self) -> None:
        """initdb (checksums) + shared settings if there is no cluster; start; on a primary,
        ensure the replication role, its rewind grants, the peer's slot and the database."""
        if not self._has_cluster():
            self._initdb()
        self.start()
        if self._probe().status.role is DbRole.PRIMARY:
            self._bootstrap()

    def start(self, timeout: int | None = None) -> None:
        """Start the cluster if it is not running (hba rewritten first). Waits until ready."""
        wait_s = timeout or self.START_TIMEOUT_S
        if not self._has_cluster():
            raise DbError(f"cannot start: no cluster in {self.pgdata}")
        if self._postmaster() is not None:
            return
        self._clear_stale_pid_file()
        self._prepare_runtime()
        argv = [
            self._bin("pg_ctl"),
            "start",
            "-D",
            str(self.pgdata),
            "-l",
            str(self.log_file),
            "-o",
            server_options(self.node_name, self.port, self.socket_dir, self.listen),
            "-w",
            "-t",
            str(wait_s),
        ]
        self._run(argv, timeout=wait_s + 10)

    def stop(self) -> None:
        """Fast shutdown, bounded: after STOP_TIMEOUT_S it escalates to an immediate stop."""
        self._close()
        if self._postmaster() is None:
            return
        try:
            self._pg_ctl_stop("fast", self.STOP_TIMEOUT_S)
        except CommandError as exc:
            log.warning("%s: fast stop failed (%s); stopping immediately", self.node_name, exc)
            self.stop_immediate()

    def stop_immediate(self) -> None:
        """Like a crash (recovery on next start). For escalation and tests."""
        self._close()
        if self._postmaster() is None:
            return
        self._pg_ctl_stop("immediate", 15)

    def promote(self, above_timeline: int = 0) -> None:
        """Standby -> primary. Returns once it is out of recovery (writable), then makes sure the
        peer's slot exists so the old primary can rejoin without a gap in WAL.

        PostgreSQL opens the timeline after the newest whose history file it finds. A standby
        that never streamed its peer's newer timeline (it rejoined, and the peer died before
        sending anything) has no such file, and would open the peer's timeline id again over
        another history, which pg_rewind and the WAL receiver cannot tell apart (found by the
        simulation). So each timeline up to ``above_timeline`` that has no history file here
        gets a placeholder (comments only, which PostgreSQL's parser skips), and the promotion
        opens the one after."""
        probe = self._probe()
        role = probe.status.role
        if role is DbRole.STANDBY:
            self._reserve_timelines(probe.status.timeline, above_timeline)
            started = time.monotonic()
            self._promote_and_wait()
            log.info("%s: promoted in %.0f ms", self.node_name, (time.monotonic() - started) * 1e3)
        elif role is not DbRole.PRIMARY:
            raise DbError(f"cannot promote: database is {role}")
        self._ensure_peer_slot()

    def follow(self, primary_host: str, progress: Progress | None = None) -> FollowResult:
        """Become a streaming standby of ``primary_host`` (on ``peer_port``).

        Already streaming from it: "none". Otherwise the source is reached first (nothing local
        is touched while the new primary is unreachable), asked to CHECKPOINT (gotcha 4: else
        pg_rewind sees one timeline and silently does nothing), then pg_rewind --dry-run decides:
        no divergence -> "reconfigure"; divergence -> the local WAL after the divergence point
        is dumped to ``data_root/diverged/`` and the node is rewound -> "rewind". No cluster,
        or a failed rewind -> "reclone" (pg_basebackup)."""
        probe = self._probe()
        if probe.status.role is DbRole.STANDBY and self._streams_from(probe, primary_host):
            return FollowResult("none")
        self._write_passfile()
        if probe.status.role is DbRole.ABSENT:
            return self._reclone(primary_host, progress)
        with self._timed("checkpoint on the source"):
            self._checkpoint_source(primary_host)
        self.stop()
        state = self._local_controldata().get("Database cluster state")
        if state == "in archive recovery" or (self.pgdata / "backup_label").exists():
            # A crashed standby, or a clone that never started (backup_label, control file
            # copied "in production"): its WAL is a prefix of the primary's. Single-user crash
            # recovery would end recovery and write a checkpoint of its own, diverging it on the
            # same timeline where pg_rewind cannot see it; start it as a standby instead.
            return self._reconfigure(primary_host, progress)
        try:
            with self._timed("crash recovery"):
                self._ensure_clean_shutdown()
            check = self._rewind_check(primary_host)
        except CommandError as exc:
            if _is_connection_failure(exc.stderr):
                # the source went away between CHECKPOINT and pg_rewind: retry later rather
                # than throw the local data away (the node stays stopped meanwhile)
                raise DbError(f"pg_rewind cannot reach {primary_host}: {exc}") from exc
            log.warning("%s: cannot rewind (%s); re-cloning", self.node_name, exc)
            return self._reclone(primary_host, progress)
        except ValueError as exc:
            log.warning("%s: cannot rewind (%s); re-cloning", self.node_name, exc)
            return self._reclone(primary_host, progress)
        if not check.needed:
            return self._reconfigure(primary_host, progress)
        assert check.diverged_lsn is not None and check.diverged_tli is not None
        with self._timed("preserving diverged WAL"):
            preserved = self._preserve(primary_host, check.diverged_lsn, check.diverged_tli)
        try:
            with self._timed("pg_rewind"):
                self._rewind_copy(primary_host, progress)
        except (CommandError, ValueError) as exc:
            log.warning("%s: pg_rewind failed (%s); re-cloning", self.node_name, exc)
            self._reclone(primary_host, progress)
            return FollowResult("reclone", preserved, check.diverged_lsn)
        with self._timed("start as standby"):
            self._become_standby(primary_host)
        return FollowResult("rewind", preserved, check.diverged_lsn)

    @contextlib.contextmanager
    def _timed(self, step: str) -> Iterator[None]:
        """Log how long one step of a rejoin took (where the time of a rewind goes)."""
        started = time.monotonic()
        try:
            yield
        finally:
            log.info("%s: %s: %.2f s", self.node_name, step, time.monotonic() - started)

    def set_synchronous(self, standby_name: str | None) -> None:
        """ALTER SYSTEM synchronous_standby_names (the name quoted as an identifier) + reload;
        returns once this server reports the new value, so the caller's next commit obeys it."""
        value = sync_names_value(standby_name)
        stmt = sql.SQL("ALTER SYSTEM SET synchronous_standby_names = {}").format(sql.Literal(value))
        with self._session() as conn:
            self._exec(conn, stmt)
            self._exec(conn, "SELECT pg_reload_conf()")
        deadline = time.monotonic() + 5
        while self._query_one("SELECT current_setting('synchronous_standby_names')") != value:
            if time.monotonic() > deadline:
                raise DbError("synchronous_standby_names did not take effect within 5 s")
            time.sleep(0.005)

    # --- status --------------------------------------------------------------------------

    def has_cluster(self) -> bool:
        return self._has_cluster()

    def postmaster_alive(self) -> bool:
        """A live postmaster runs on this data directory (whoever started it)."""
        return self._postmaster() is not None

    def _has_cluster(self) -> bool:
        return (self.pgdata / "PG_VERSION").is_file()

    def _postmaster(self) -> tuple[int, str] | None:
        """(pid, status) of a live postmaster, or None. A crash leaves a stale postmaster.pid;
        the PID must be alive and be a postgres process, else the server is stopped."""
        try:
            parsed = parse_pid_file(read_nofollow(self.pgdata / "postmaster.pid"))
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            return None
        except OSError as exc:
            if exc.errno != errno.ELOOP:  # a symlink planted in postgres's directory
                raise
            return None
        if parsed is None:
            return None
        return parsed if pid_is_live_postgres(parsed[0]) else None

    def _probe(self) -> _Probe:
        if not self._has_cluster():
            return _Probe(DbStatus(DbRole.ABSENT))
        pm = self._postmaster()
        if pm is None or pm[1] not in ("ready", "standby"):
            return _Probe(DbStatus(DbRole.STOPPED))  # starting/stopping: not usable yet
        row = self._status_row()
        in_recovery, lsn, receive, walfile, ckpt_tli = row[0:5]
        wr_status, wr_tli, sender_host, sender_port = row[5:9]
        sync_standby, sync_names, lag, streaming_to, xid_xmax, xid_xmin = row[9:15]
        if in_recovery:
            timeline = int(wr_tli) if wr_tli else int(ckpt_tli)
        else:
            # the insert timeline: the checkpoint's lags after a promotion (PG15 promotes
            # without waiting for the end-of-recovery checkpoint)
            timeline = int(walfile[:8], 16) if walfile else int(ckpt_tli)
        status = DbStatus(
            role=DbRole.STANDBY if in_recovery else DbRole.PRIMARY,
            timeline=timeline,
            lsn=parse_lsn(lsn) if lsn else 0,
            receive_lsn=parse_lsn(receive) if receive else 0,
            streaming=wr_status == "streaming",
            sync_standby=None if in_recovery else sync_standby,
            sync_names=str(sync_names),
            replay_lag_s=float(lag or 0.0),
            streaming_to=tuple(streaming_to.split(",")) if streaming_to else (),
            xid_xmax=int(xid_xmax or 0),
            xid_xmin=int(xid_xmin or 0),
        )
        return _Probe(status, sender_host, int(sender_port) if sender_port else None)

    def _status_row(self) -> tuple[Any, ...]:
        """The status query on the kept connection; one reconnect (the server restarted).

        statement_timeout is enforced by the server, so a stopped (SIGSTOP) or hung server
        would block the agent's cycle forever: a watchdog shuts the socket down instead."""
        for attempt in (1, 2):
            timed_out = threading.Event()
            try:
                conn = self._connection()
                timer = threading.Timer(self.STATUS_WATCHDOG_S, _shutdown_socket, (conn, timed_out))
                timer.start()
                try:
                    row = conn.execute(_STATUS_SQL).fetchone()
                finally:
                    timer.cancel()
                assert row is not None
                return row
            except psycopg.Error as exc:
                self._close()
                if attempt == 2 or timed_out.is_set():
                    why = (
                        f"no answer in {self.STATUS_WATCHDOG_S:.1f} s"
                        if timed_out.is_set()
                        else exc
                    )
                    raise DbError(f"{self.node_name}: status query failed: {why}") from exc
        raise AssertionError("unreachable")

    def _query_one(self, query: str) -> Any:
        try:
            row = self._connection().execute(query).fetchone()
        except psycopg.Error as exc:
            self._close()
            raise DbError(f"{self.node_name}: {exc}") from exc
        return None if row is None else row[0]

    def _streams_from(self, probe: _Probe, host: str) -> bool:
        return (
            probe.status.streaming
            and probe.sender_host == host.strip("[]")
            and probe.sender_port == self.peer_port
        )

    # --- connections ---------------------------------------------------------------------

    def _local_kwargs(self, dbname: str, statement_timeout_ms: int) -> dict[str, Any]:
        return {
            "host": str(self.socket_dir),
            "port": self.port,
            "user": SUPERUSER,  # peer authentication: we run as root (or as postgres)
            "dbname": dbname,
            "connect_timeout": 2,  # libpq's minimum; a unix socket answers at once anyway
            "application_name": "esc-agent",
            "options": f"-c statement_timeout={statement_timeout_ms}",
            "autocommit": True,
        }

    def _connection(self) -> psycopg.Connection[tuple[Any, ...]]:
        """The kept status connection (statement_timeout bounds every status look)."""
        if self._conn is None or self._conn.closed:
            try:
                self._conn = psycopg.connect(
                    **self._local_kwargs("postgres", self.STATUS_TIMEOUT_MS)
                )
            except psycopg.Error as exc:
                raise DbError(f"{self.node_name}: cannot connect: {exc}") from exc
        return self._conn

    def _close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None

    @contextlib.contextmanager
    def _session(
        self, dbname: str = "postgres", statement_timeout_ms: int = 0
    ) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
        """A short-lived local superuser session for work longer than a status look."""
        try:
            conn = psycopg.connect(**self._local_kwargs(dbname, statement_timeout_ms))
        except psycopg.Error as exc:
            raise DbError(f"{self.node_name}: cannot connect to {dbname}: {exc}") from exc
        try:
            yield conn
        finally:
            conn.close()

    @contextlib.contextmanager
    def _peer_session(
        self, host: str, dbname: str = "postgres"
    ) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
        """The replication role's session on the (new) primary; the password is a keyword,
        so it is in no argv and no conninfo string we might log."""
        try:
            conn = psycopg.connect(
                host=host.strip("[]"),
                port=self.peer_port,
                user=REPL_ROLE,
                password=self._password,
                dbname=dbname,
                connect_timeout=3,
                application_name=f"esc-{self.node_name}",
                autocommit=True,
            )
        except psycopg.Error as exc:
            raise DbError(f"cannot reach primary {host}:{self.peer_port}: {exc}") from exc
        try:
            yield conn
        finally:
            conn.close()

    def _exec(
        self,
        conn: psycopg.Connection[tuple[Any, ...]],
        query: str | sql.Composed,
        params: Sequence[Any] | None = None,
    ) -> list[tuple[Any, ...]]:
        """Run one statement; psycopg errors become DbError (the SQL never holds a secret)."""
        try:
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description is not None else []
        except psycopg.Error as exc:
            raise DbError(f"{self.node_name}: {exc}") from exc

    def _primary_conninfo(self, host: str) -> str:
        """The standby's conninfo: password from the passfile, keepalives so a dead primary is
        noticed in seconds even if wal_receiver_timeout were raised."""
        return make_conninfo(
            host=host.strip("[]"),
            port=self.peer_port,
            user=REPL_ROLE,
            passfile=str(self.passfile),
            application_name=self.node_name,
            connect_timeout=2,
            keepalives=1,
            keepalives_idle=2,
            keepalives_interval=1,
            keepalives_count=3,
        )

    def _source_conninfo(self, host: str) -> str:
        return make_conninfo(
            host=host.strip("[]"),
            port=self.peer_port,
            user=REPL_ROLE,
            dbname="postgres",
            passfile=str(self.passfile),
            connect_timeout=5,
        )

    # --- processes and files -------------------------------------------------------------

    def _pg_ids(self) -> tuple[int, int]:
        try:
            pw = pwd.getpwnam(self.os_user)
        except KeyError as exc:
            raise DbError(f"no OS user {self.os_user!r}") from exc
        return pw.pw_uid, pw.pw_gid

    def _argv_as_pg(self, argv: list[str]) -> list[str]:
        """PostgreSQL refuses to run as root: go through runuser unless we already are it."""
        uid, _ = self._pg_ids()
        return argv if os.geteuid() == uid else ["runuser", "-u", self.os_user, "--", *argv]

    def _env(self) -> dict[str, str]:
        """C messages (pg_rewind's output is parsed), no inherited PG* variables."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(LC_ALL="C", LANG="C", PGCONNECT_TIMEOUT="5")
        return env

    def _run(
        self,
        argv: list[str],
        *,
        timeout: float,
        ok_codes: tuple[int, ...] = (0,),
        input_text: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a PostgreSQL tool as the postgres user; failure -> CommandError."""
        full = self._argv_as_pg(argv)
        log.debug("%s: run %s", self.node_name, shlex.join(full))
        try:
            proc = subprocess.run(
                full,
                capture_output=True,
                text=True,
                input=input_text if input_text is not None else "",  # never inherit stdin
                timeout=timeout,
                env=self._env(),
                cwd="/",  # the postgres user cannot enter root's cwd
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise CommandError(full, -1, f"timed out after {timeout:.0f} s") from exc
        except OSError as exc:
            raise CommandError(full, -1, str(exc)) from exc
        if proc.returncode not in ok_codes:
            raise CommandError(full, proc.returncode, proc.stderr or proc.stdout)
        return proc

    def _pg_ctl_stop(self, mode: str, timeout: int) -> None:
        argv = [self._bin("pg_ctl"), "stop", "-D", str(self.pgdata), "-m", mode]
        self._run([*argv, "-w", "-t", str(timeout)], timeout=timeout + 10)

    def _chown(self, path: Path) -> None:
        """By path: only for what sits in a directory postgres cannot change (the socket
        directory in <run>, the data directory itself in <data>, the log in <log>)."""
        uid, gid = self._pg_ids()
        if os.geteuid() == 0:
            os.chown(path, uid, gid, follow_symlinks=False)

    def _write_pg_file(self, path: Path, text: str, mode: int = 0o600) -> None:
        """Atomically write a file the server reads, owned by postgres. The data directory
        belongs to postgres, so every name in it may be a symlink planted by that user:
        :func:`esc.files.write_atomic` creates a random name with O_EXCL|O_NOFOLLOW, fchowns
        the descriptor (the server never sees a root-owned file it cannot read) and renames,
        so root never writes through or hands over anything outside."""
        owner = self._pg_ids() if os.geteuid() == 0 else None
        write_atomic(path, text, mode, owner=owner)

    def _ensure_pg_dir(self, path: Path, mode: int) -> None:
        path.mkdir(parents=True, exist_ok=True)
        os.chmod(path, mode)
        self._chown(path)

    def _require_password(self) -> None:
        if not self._password:
            raise ConfigError("replication.password", "must be set for replication")

    def _write_passfile(self) -> None:
        self._require_password()
        self.data_root.mkdir(parents=True, exist_ok=True)
        self._write_pg_file(self.passfile, passfile_text(REPL_ROLE, self._password))

    def _prepare_runtime(self) -> None:
        """Before every start: the socket dir (0700: only root and postgres enter it), the log
        file and the node-local pg_hba and pg_ident."""
        self._ensure_pg_dir(self.socket_dir, 0o700)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        if not self.log_file.exists():
            self.log_file.touch(mode=0o640)
        self._chown(self.log_file)
        self._write_access_files()

    def _write_access_files(self) -> None:
        self._write_pg_file(self.pgdata / "pg_hba.conf", render_hba(self.peer_host))
        self._write_pg_file(self.pgdata / "pg_ident.conf", render_ident(["root", self.os_user]))

    def refresh_access(self) -> None:
        """At agent start: a server left running (by an older agent, whose pg_hba had a
        ``trust`` line, and a 0755 socket directory) gets this version's access rules now,
        not at its next restart: the socket directory closed, pg_hba and pg_ident rewritten,
        and the server told to reload them. Nothing to do without a cluster."""
        if not self._has_cluster():
            return
        if self.socket_dir.is_dir():
            self._ensure_pg_dir(self.socket_dir, 0o700)
        self._write_access_files()
        if self._postmaster() is not None:
            with self._session() as conn:
                self._exec(conn, "SELECT pg_reload_conf()")

    # --- init ----------------------------------------------------------------------------

    def _initdb(self) -> None:
        self.data_root.mkdir(parents=True, exist_ok=True)
        self._ensure_pg_dir(self.pgdata, 0o700)
        self._run(
            [
                self._bin("initdb"),
                "-D",
                str(self.pgdata),
                "--data-checksums",  # pg_rewind and corruption detection
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C",
                "--auth-local=peer",  # pg_hba is rewritten before the first start anyway
                "--auth-host=scram-sha-256",
            ],
            timeout=300,
        )
        conf = self.pgdata / "postgresql.conf"
        block = render_shared_conf(
            self.node_name,
            self.peer_name,
            replicated=self.replicated,
            slot_keep_mb=self.slot_keep_mb,
        )
        self._write_pg_file(conf, merge_conf_block(read_nofollow(conf), block))

    def _bootstrap(self) -> None:
        """Roles, grants, the peer's slot, the application database; idempotent.

        The session commits with synchronous_commit=local: the peer is named synchronous
        before any standby exists, and the DDL would wait forever (gotcha 2)."""
        with self._session() as conn:
            self._exec(conn, "SET synchronous_commit = local")
            self._require_password()
            verifier = self._scram_verifier(conn)
            exists = self._exec(conn, "SELECT 1 FROM pg_roles WHERE rolname = %s", [REPL_ROLE])
            verb = "ALTER" if exists else "CREATE"
            self._exec(
                conn,
                sql.SQL("{} ROLE {} WITH LOGIN REPLICATION PASSWORD {}").format(
                    sql.SQL(verb), sql.Identifier(REPL_ROLE), sql.Literal(verifier)
                ),
            )
            for fn in REWIND_FUNCTIONS:
                self._exec(
                    conn,
                    sql.SQL("GRANT EXECUTE ON FUNCTION {} TO {}").format(
                        sql.SQL(fn), sql.Identifier(REPL_ROLE)
                    ),
                )
            # PG15: CHECKPOINT without superuser, needed before pg_rewind (gotcha 4)
            self._exec(conn, sql.SQL("GRANT pg_checkpoint TO {}").format(sql.Identifier(REPL_ROLE)))
            if not self._exec(conn, "SELECT 1 FROM pg_database WHERE datname = %s", [self.db_name]):
                self._exec(conn, sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.db_name)))
        self._ensure_peer_slot()

    def _scram_verifier(self, conn: psycopg.Connection[tuple[Any, ...]]) -> str:
        """libpq computes the SCRAM verifier, so the clear password never reaches the server
        (a failed CREATE ROLE would otherwise log it)."""
        try:
            raw = conn.pgconn.encrypt_password(
                self._password.encode(), REPL_ROLE.encode(), b"scram-sha-256"
            )
        except psycopg.Error as exc:
            raise DbError(f"cannot encrypt the replication password: {exc}") from exc
        return raw.decode()

    def _ensure_peer_slot(self) -> None:
        """The peer's slot, reserving WAL from now, so the peer can rejoin without a gap.
        None without replication: an unused slot would keep WAL forever."""
        if not self.replicated:
            return
        with self._session() as conn:
            self._exec(
                conn,
                "SELECT pg_create_physical_replication_slot(%s, true) WHERE NOT EXISTS"
                " (SELECT 1 FROM pg_replication_slots WHERE slot_name = %s)",
                [self.peer_slot, self.peer_slot],
            )

    # --- promote -------------------------------------------------------------------------

    def _reserve_timelines(self, ours: int, above: int) -> None:
        for tli in range(max(ours, 1) + 1, above + 1):
            path = self.pgdata / "pg_wal" / f"{tli:08X}.history"
            if path.exists():
                continue
            log.warning(
                "%s: timeline %d is the peer's and was never streamed here: reserving it, "
                "so the promotion opens timeline %d",
                self.node_name,
                tli,
                above + 1,
            )
            self._write_pg_file(
                path,
                f"# esc-ha: timeline {tli} belongs to the peer's history, never streamed to "
                f"{self.node_name}; reserved so that a promotion here opens another id\n",
            )

    def _promote_and_wait(self) -> None:
        """pg_promote(wait => false), then poll every 2 ms: pg_promote's own wait and
        ``pg_ctl promote -w`` both poll in 100 ms steps, three times the promotion itself."""
        with self._session(statement_timeout_ms=5000) as conn:
            self._exec(conn, "SELECT pg_promote(false)")
            deadline = time.monotonic() + self.PROMOTE_TIMEOUT_S
            while self._exec(conn, "SELECT pg_is_in_recovery()")[0][0]:
                if time.monotonic() > deadline:
                    raise DbError(f"still in recovery {self.PROMOTE_TIMEOUT_S} s after promote")
                time.sleep(0.002)

    # --- follow: source, rewind, preserve, re-clone -----------------------------------------

    def _checkpoint_source(self, host: str) -> None:
        """CHECKPOINT on the new primary, so its control file shows the new timeline."""
        with self._peer_session(host) as conn:
            self._exec(conn, "CHECKPOINT")

    def _rewind_check(self, host: str) -> RewindCheck:
        """``pg_rewind --dry-run``: is a rewind needed, and where did the histories fork?"""
        argv = [self._bin("pg_rewind"), "-D", str(self.pgdata)]
        argv += [f"--source-server={self._source_conninfo(host)}", "--dry-run"]
        started = time.monotonic()
        proc = self._run(argv, timeout=3600)
        check = parse_rewind_output(proc.stdout + proc.stderr)
        log.info(
            "%s: pg_rewind --dry-run: %.2f s: %s",
            self.node_name,
            time.monotonic() - started,
            "diverged at " + format_lsn(check.diverged_lsn)
            if check.diverged_lsn is not None and check.needed
            else "no rewind required",
        )
        return check

    def _rewind_copy(self, host: str, progress: Progress | None) -> None:
        """The real pg_rewind, its progress reported as "rewinding" (a dry run decided that
        one is needed)."""
        argv = [self._bin("pg_rewind"), "-D", str(self.pgdata)]
        argv += [f"--source-server={self._source_conninfo(host)}", "--progress"]
        self._run_with_progress(argv, "rewinding", progress, 3600)

    def _ensure_clean_shutdown(self) -> None:
        """A crashed cluster must finish crash recovery before ``pg_rewind --dry-run`` (which
        refuses it, unlike a real rewind): run it in single-user mode, as pg_rewind itself
        does. Signal files go first: single-user mode refuses standby mode."""
        state = self._local_controldata().get("Database cluster state", "")
        if state in ("shut down", "shut down in recovery"):
            return
        log.info("%s: cluster state %r; completing crash recovery", self.node_name, state)
        self._clear_stale_pid_file()
        for signal_file in ("standby.signal", "recovery.signal"):
            (self.pgdata / signal_file).unlink(missing_ok=True)
        argv = [self._bin("postgres"), "--single", "-F", "-D", str(self.pgdata), "template1"]
        self._run(argv, timeout=3600)

    def _clear_stale_pid_file(self) -> None:
        """Remove a postmaster.pid whose process is dead but not yet reaped (a zombie): the
        server's own check (kill(pid, 0)) takes a zombie for a live postmaster and refuses to
        start, and a slow init can leave one for seconds. A live postmaster's file is kept."""
        pid_file = self.pgdata / "postmaster.pid"
        try:
            parsed = parse_pid_file(read_nofollow(pid_file))
        except OSError:
            return
        if parsed is not None and self._postmaster() is None:
            log.info(
                "%s: removing the stale postmaster.pid of dead pid %d", self.node_name, parsed[0]
            )
            pid_file.unlink(missing_ok=True)
        # The socket's lock file has the same check (and the same zombie in it).
        sock_lock = self.socket_dir / f".s.PGSQL.{self.port}.lock"
        try:
            first = read_nofollow(sock_lock).split("\n", 1)[0].strip()
        except OSError:
            return
        pid = int(first) if first.lstrip("-").isdigit() else 0
        if pid and not pid_is_live_postgres(abs(pid)):
            log.info("%s: removing the stale socket lock of dead pid %d", self.node_name, pid)
            sock_lock.unlink(missing_ok=True)

    def _local_controldata(self) -> dict[str, str]:
        proc = self._run([self._bin("pg_controldata"), "-D", str(self.pgdata)], timeout=30)
        return parse_controldata(proc.stdout)

    def _preserve(self, host: str, lsn: int, tli: int) -> Path | None:
        """Keep what this node committed after the divergence point before pg_rewind replaces
        it: the pg_waldump text and, decoded in single-user mode, the rows those transactions
        wrote, in ``data_root/diverged/``. None when the WAL there holds no commit (a crash
        leaves only checkpoints): nothing acknowledged is lost then."""
        local_tli = int(self._local_controldata().get("Latest checkpoint's TimeLineID", tli))
        dumps = [(t, *self._waldump(lsn, t)) for t in sorted({tli, local_tli})]
        text = "".join(d[1] for d in dumps)
        xids = committed_xids(text)
        if not xids and count_waldump_records(text) > 0:
            log.info("%s: no commit after %s; nothing to keep", self.node_name, format_lsn(lsn))
            return None
        rows = self._decode_rows(host, text, xids) if xids else ""
        now = datetime.now(UTC)
        header = [
            "# ESC-HA: transactions this node committed that the new primary does not have.",
            f"# node: {self.node_name}  new primary: {host}:{self.peer_port}",
            f"# diverged at {format_lsn(lsn)} on timeline {tli}; local timeline {local_tli}",
            f"# written {now.isoformat(timespec='seconds')}",
            f"# WAL records: {count_waldump_records(text)}",
            f"# committed transactions: {' '.join(map(str, xids)) or 'unknown'}",
        ]
        sections = ["\n".join(header), "# --- rows they wrote (inserts, new row versions):", rows]
        for t, dump, note in dumps:
            sections.append(f"# --- pg_waldump -s {format_lsn(lsn)} -t {t}: {note}\n{dump}")
        path = self._write_preserved(preserved_name(now, lsn), "\n".join(sections))
        log.warning(
            "%s: diverged at %s; %d committed transaction(s) kept in %s",
            self.node_name,
            format_lsn(lsn),
            len(xids),
            path,
        )
        return path

    def _write_preserved(self, name: str, text: str) -> Path:
        self.diverged_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.diverged_dir, 0o700)  # it holds application data
        path = self.diverged_dir / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        return path

    def _waldump(self, lsn: int, tli: int) -> tuple[str, str]:
        """pg_waldump from ``lsn`` to the end of local WAL. It always ends with an error at the
        end of WAL ("invalid record length"), so exit 1 is normal; its message is kept."""
        argv = [self._bin("pg_waldump"), "-p", str(self.pgdata / "pg_wal")]
        argv += ["-s", format_lsn(lsn), "-t", str(tli)]
        try:
            proc = self._run(argv, timeout=600, ok_codes=(0, 1))
        except CommandError as exc:
            return "", f"failed: {exc}"
        return proc.stdout, proc.stderr.strip().replace("\n", " | ") or "ok"

    def _decode_rows(self, host: str, waldump: str, xids: list[int]) -> str:
        """Rows of the diverged transactions, read from the stopped local cluster in
        single-user mode (no socket, so no client can write meanwhile). Best effort: the
        pg_waldump text stays the record if this fails."""
        by_db: dict[int, list[str]] = {}
        for (spc, dboid, node), blocks in touched_heap_blocks(waldump).items():
            stmt = diverged_rows_query(spc, node, blocks[:1000], xids)
            by_db.setdefault(dboid, []).append(stmt)
        out: list[str] = []
        for dboid, statements in by_db.items():
            datname = self._database_name(host, dboid)
            if datname is None:
                out.append(f"# database oid {dboid}: unknown on the new primary; rows not read")
                continue
            out.append(f"# database {datname}:\n{self._single_user(datname, statements)}")
        return "\n".join(out)

    def _database_name(self, host: str, dboid: int) -> str | None:
        try:
            with self._peer_session(host) as conn:
                rows = self._exec(conn, "SELECT datname FROM pg_database WHERE oid = %s", [dboid])
        except DbError as exc:
            log.warning("%s: cannot name database %d: %s", self.node_name, dboid, exc)
            return None
        return str(rows[0][0]) if rows else None

    def _single_user(self, dbname: str, statements: list[str]) -> str:
        """Run statements in single-user mode; its output (or error) as text."""
        for signal_file in ("standby.signal", "recovery.signal"):  # refused in single-user
            (self.pgdata / signal_file).unlink(missing_ok=True)
        argv = [self._bin("postgres"), "--single", "-D", str(self.pgdata), dbname]
        try:
            proc = self._run(argv, timeout=600, input_text="\n".join(statements) + "\n")
        except CommandError as exc:
            return f"# single-user mode failed: {exc}"
        return proc.stdout.replace("backend> ", "")

    def _reconfigure(self, host: str, progress: Progress | None) -> FollowResult:
        """Point the existing data at ``host`` and start it as a standby. If it never reaches
        a consistent state (its data is ahead of the new primary's history), re-clone, keeping
        the old directory: it may hold writes the new primary lacks."""
        try:
            self._become_standby(host, start_timeout=self.STANDBY_START_TIMEOUT_S)
        except (DbError, CommandError) as exc:
            log.warning(
                "%s: standby did not start after reconfigure (%s); re-cloning", self.node_name, exc
            )
            self.stop_immediate()
            return self._reclone(host, progress, keep_old=True)
        return FollowResult("reconfigure")

    def _become_standby(self, host: str, start_timeout: int | None = None) -> None:
        """Rewrite auto.conf whole, create standby.signal, start, drop the stale peer slot."""
        self._write_pg_file(
            self.pgdata / "postgresql.auto.conf",
            render_standby_auto_conf(self._primary_conninfo(host), self.own_slot),
        )
        (self.pgdata / "recovery.signal").unlink(missing_ok=True)
        self._write_pg_file(self.pgdata / "standby.signal", "")
        self.start(timeout=start_timeout)
        self._drop_stale_peer_slot()

    def _drop_stale_peer_slot(self) -> None:
        """A former primary keeps its slot for the peer (pg_rewind leaves pg_replslot alone);
        on a standby it would pin WAL forever. promote() recreates it when needed."""
        try:
            with self._session() as conn:
                self._exec(
                    conn,
                    "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
                    " WHERE slot_name = %s AND NOT active",
                    [self.peer_slot],
                )
        except DbError as exc:
            log.warning("%s: could not drop stale slot %s: %s", self.node_name, self.peer_slot, exc)

    def _reclone(
        self, host: str, progress: Progress | None, keep_old: bool = False
    ) -> FollowResult:
        """pg_basebackup into an empty data dir. A former primary's dir is moved aside under
        ``diverged/`` first (it may hold transactions the source lacks); a standby's is
        removed (everything in it came from a primary)."""
        preserved: Path | None = None
        if self._has_cluster():
            self.stop()
            state = self._local_controldata().get("Database cluster state", "")
            if "recovery" in state and not keep_old:
                shutil.rmtree(self.pgdata)
            else:
                self.diverged_dir.mkdir(parents=True, exist_ok=True)
                stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
                preserved = self.diverged_dir / f"pgdata-{stamp}"
                self.pgdata.rename(preserved)
                log.warning("%s: old data directory kept in %s", self.node_name, preserved)
        elif self.pgdata.exists():
            shutil.rmtree(self.pgdata)  # an initdb or clone that failed half way
        self.data_root.mkdir(parents=True, exist_ok=True)
        self._ensure_pg_dir(self.pgdata, 0o700)
        started = time.monotonic()
        self._basebackup(host, progress)
        log.info("%s: cloned in %.2f s", self.node_name, time.monotonic() - started)
        self._become_standby(host)
        return FollowResult("reclone", preserved)

    def _source_slot_exists(self, host: str) -> bool:
        """Whether our slot exists on the source. An active one is waited for (up to 10 s,
        twice wal_sender_timeout): our own walreceiver, just stopped, may still hold it."""
        deadline = time.monotonic() + 10
        with self._peer_session(host) as conn:
            while True:
                rows = self._exec(
                    conn,
                    "SELECT active FROM pg_replication_slots WHERE slot_name = %s",
                    [self.own_slot],
                )
                if not (rows and rows[0][0]):
                    return bool(rows)
                if time.monotonic() > deadline:
                    raise DbError(f"slot {self.own_slot} on {host} is in use by another client")
                time.sleep(0.1)

    def _basebackup(self, host: str, progress: Progress | None) -> None:
        """pg_basebackup -X stream into our slot (created by -C if the source lacks it), with
        --progress parsed into ``progress("cloning", done, total)``."""
        argv = [self._bin("pg_basebackup"), "-d", self._source_conninfo(host)]
        argv += ["-D", str(self.pgdata), "-X", "stream", "-c", "fast", "-S", self.own_slot]
        if not self._source_slot_exists(host):
            argv.append("-C")
        argv.append("--progress")
        self._run_with_progress(argv, "cloning", progress, self.BASEBACKUP_TIMEOUT_S)

    def _run_with_progress(
        self, argv: list[str], operation: str, progress: Progress | None, timeout_s: float
    ) -> None:
        """Run a copying tool as postgres with its ``--progress`` lines ("N/M kB") on stderr
        reported as ``progress(operation, done, total)``; failure -> CommandError."""
        full = self._argv_as_pg(argv)
        try:
            proc = subprocess.Popen(
                full,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                env=self._env(),
                cwd="/",
            )
        except OSError as exc:
            raise CommandError(full, -1, str(exc)) from exc
        # The watchdog bounds the whole copy (reading stderr blocks until the tool exits); the
        # finally kills it if the progress callback raises.
        watchdog = threading.Timer(timeout_s, proc.kill)
        watchdog.start()
        try:
            tail = self._read_progress(proc, operation, progress)
            rc = proc.wait()
        finally:
            watchdog.cancel()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if rc != 0:
            raise CommandError(full, rc, tail or f"exit {rc} (killed after a timeout?)")

    @staticmethod
    def _read_progress(
        proc: subprocess.Popen[bytes], operation: str, progress: Progress | None
    ) -> str:
        """Split the tool's stderr on CR/LF; report progress lines, keep the rest."""
        assert proc.stderr is not None
        buf = b""
        other: list[str] = []
        last: tuple[int, int] | None = None
        while chunk := os.read(proc.stderr.fileno(), 4096):
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


def _conforms(driver: PostgresDriver) -> Database:
    """mypy checks here that the driver implements the Database protocol."""
    return driver
