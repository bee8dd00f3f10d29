"""The real PostgreSQL 15 driver: the local cluster of one node, run as the ``postgres`` OS user.

:class:`PostgresDriver` is the facade (the one :class:`esc.drivers.base.Database` of a real
node); the work is done by one module per job: ``settings`` (names, paths, limits), ``conf``
(the files and options written, pure), ``status`` (DbStatus from the status query, pure),
``session`` (connections), ``tools`` (the programs and files, as the postgres user),
``process`` (pg_ctl, the pid file, single-user mode), ``bootstrap`` (initdb, roles, slots,
promotion), ``forensics`` (diverged WAL kept) and ``follow`` (reconfigure, rewind, re-clone).

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

import ipaddress
import logging
import time
from pathlib import Path

from psycopg import sql

from esc.accounts import MANAGER_USER
from esc.config.schema import EscConfig, NodePaths
from esc.drivers.base import Database, FollowResult, Progress
from esc.drivers.postgres.bootstrap import Primary
from esc.drivers.postgres.conf import (
    conf_quote,
    hba_address,
    merge_conf_block,
    pair_sync_names,
    passfile_escape,
    passfile_text,
    quote_ident,
    render_hba,
    render_ident,
    render_shared_conf,
    render_standby_auto_conf,
    server_options,
    sync_names_value,
)
from esc.drivers.postgres.follow import Follower, RewindCheck, parse_rewind_output
from esc.drivers.postgres.forensics import (
    Forensics,
    committed_xids,
    count_waldump_records,
    diverged_rows_query,
    preserved_name,
    touched_heap_blocks,
)
from esc.drivers.postgres.process import Server, parse_pid_file
from esc.drivers.postgres.session import Sessions
from esc.drivers.postgres.settings import (
    CONF_BEGIN,
    CONF_END,
    IDENT_MAP,
    REPL_ROLE,
    REWIND_FUNCTIONS,
    SUPERUSER,
    PgNode,
    slot_name,
)
from esc.drivers.postgres.status import format_lsn, parse_lsn
from esc.drivers.postgres.tools import PgTools, parse_basebackup_progress, parse_controldata
from esc.drivers.volume import mountpoint_of
from esc.errors import ConfigError, DbError
from esc.model import DbRole, DbStatus

__all__ = [
    "CONF_BEGIN",
    "CONF_END",
    "IDENT_MAP",
    "REPL_ROLE",
    "REWIND_FUNCTIONS",
    "SUPERUSER",
    "PostgresDriver",
    "RewindCheck",
    "committed_xids",
    "conf_quote",
    "count_waldump_records",
    "diverged_rows_query",
    "format_lsn",
    "hba_address",
    "merge_conf_block",
    "pair_sync_names",
    "parse_basebackup_progress",
    "parse_controldata",
    "parse_lsn",
    "parse_pid_file",
    "parse_rewind_output",
    "passfile_escape",
    "passfile_text",
    "preserved_name",
    "quote_ident",
    "render_hba",
    "render_ident",
    "render_shared_conf",
    "render_standby_auto_conf",
    "server_options",
    "slot_name",
    "sync_names_value",
    "touched_heap_blocks",
]

log = logging.getLogger("esc.drivers.postgres")


class PostgresDriver:
    """The local PostgreSQL of one node (implements :class:`esc.drivers.base.Database`)."""

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
        pki: Path | None = None,
        app_group: str | None = None,
    ) -> None:
        if node_name == peer_name:
            raise ConfigError("node_name", "must differ from the peer's name")
        self.node = PgNode(
            node_name=node_name,
            peer_name=peer_name,
            pgdata=pgdata,
            data_root=data_root,
            socket_dir=socket_dir,
            port=port,
            listen=listen,
            peer_host=peer_host,
            peer_port=port if peer_port is None else peer_port,
            password=repl_password,
            bindir=bindir,
            log_file=log_file,
            db_name=db_name,
            os_user=os_user,
            replicated=replicated,
            slot_keep_mb=slot_keep_mb,
            pki=pki,
            app_group=app_group,
        )
        tools = PgTools(self.node)
        self._sessions = Sessions(self.node)
        self._server = Server(self.node, tools, self._sessions)
        self._primary = Primary(self.node, tools, self._sessions)
        forensics = Forensics(self.node, tools, self._server, self._sessions)
        self._follower = Follower(self.node, tools, self._sessions, self._server, forensics)

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
            # The peer connects to this node's own address only (streaming, clone, rewind);
            # every local client uses the socket. Not the VIP, not every interface.
            listen=own,
            peer_host=peer,
            repl_password=cfg.replication.password,
            bindir=Path(cfg.database.pg_bindir),
            log_file=paths.log_dir / "postgres.log",
            db_name=cfg.database.name,
            replicated=cfg.ha.ha_mode != "cinder",
            slot_keep_mb=cfg.database.max_slot_wal_keep_size_mb,
            # replication over TLS against the pair CA (its files: pki.ensure_node at start)
            pki=paths.pki_dir if cfg.ha.ha_mode != "cinder" else None,
            app_group=MANAGER_USER,  # esc-manager's group reaches the socket
        )

    # --- names and paths (of self.node) ---------------------------------------------------

    @property
    def node_name(self) -> str:
        return self.node.node_name

    @property
    def peer_name(self) -> str:
        return self.node.peer_name

    @property
    def pgdata(self) -> Path:
        return self.node.pgdata

    @property
    def socket_dir(self) -> Path:
        return self.node.socket_dir

    @property
    def port(self) -> int:
        return self.node.port

    @property
    def peer_host(self) -> str:
        return self.node.peer_host

    @property
    def peer_port(self) -> int:
        return self.node.peer_port

    @property
    def log_file(self) -> Path:
        return self.node.log_file

    @property
    def db_name(self) -> str:
        return self.node.db_name

    @property
    def os_user(self) -> str:
        return self.node.os_user

    @property
    def replicated(self) -> bool:
        return self.node.replicated

    @property
    def own_slot(self) -> str:
        return self.node.own_slot

    @property
    def peer_slot(self) -> str:
        return self.node.peer_slot

    @property
    def passfile(self) -> Path:
        return self.node.passfile

    @property
    def diverged_dir(self) -> Path:
        return self.node.diverged_dir

    # --- Database protocol ---------------------------------------------------------------

    def status(self) -> DbStatus:
        """One bounded look: files first (absent/stopped in microseconds), then one query."""
        return self._server.probe().status

    def init_primary(self) -> None:
        """initdb (checksums) + shared settings if there is no cluster; start; on a primary,
        ensure the replication role, its rewind grants, the peer's slot and the database."""
        if not self._server.has_cluster():
            self._primary.initdb()
        self.start()
        if self._server.probe().status.role is DbRole.PRIMARY:
            self._primary.bootstrap()

    def start(self, timeout: int | None = None) -> None:
        """Start the cluster if it is not running (hba rewritten first). Waits until ready."""
        self._server.start(timeout)

    def stop(self) -> None:
        """Fast shutdown, bounded: after STOP_TIMEOUT_S it escalates to an immediate stop."""
        self._server.stop()

    def stop_immediate(self) -> None:
        """Like a crash (recovery on next start). For escalation and tests."""
        self._server.stop_immediate()

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
        probe = self._server.probe()
        role = probe.status.role
        if role is DbRole.STANDBY:
            self._primary.reserve_timelines(probe.status.timeline, above_timeline)
            started = time.monotonic()
            self._primary.promote_and_wait()
            log.info("%s: promoted in %.0f ms", self.node_name, (time.monotonic() - started) * 1e3)
        elif role is not DbRole.PRIMARY:
            raise DbError(f"cannot promote: database is {role}")
        self._primary.ensure_peer_slot()

    def follow(self, primary_host: str, progress: Progress | None = None) -> FollowResult:
        """Become a streaming standby of ``primary_host`` (:meth:`Follower.follow`)."""
        return self._follower.follow(primary_host, progress)

    def set_synchronous(self, standby_name: str | None) -> None:
        """ALTER SYSTEM synchronous_standby_names (the name quoted as an identifier) + reload;
        returns once this server reports the new value, so the caller's next commit obeys it."""
        value = sync_names_value(standby_name)
        stmt = sql.SQL("ALTER SYSTEM SET synchronous_standby_names = {}").format(sql.Literal(value))
        with self._sessions.session() as conn:
            self._sessions.exec(conn, stmt)
            self._sessions.exec(conn, "SELECT pg_reload_conf()")
        deadline = time.monotonic() + 5
        while (
            self._sessions.query_one("SELECT current_setting('synchronous_standby_names')") != value
        ):
            if time.monotonic() > deadline:
                raise DbError("synchronous_standby_names did not take effect within 5 s")
            time.sleep(0.005)

    # --- the node's agent ------------------------------------------------------------------

    def has_cluster(self) -> bool:
        return self._server.has_cluster()

    def postmaster_alive(self) -> bool:
        """A live postmaster runs on this data directory (whoever started it)."""
        return self._server.postmaster() is not None

    def refresh_access(self) -> None:
        """At agent start: a server left running gets this version's access rules now
        (:meth:`Server.refresh_access`)."""
        self._server.refresh_access()


def _conforms(driver: PostgresDriver) -> Database:
    """mypy checks here that the driver implements the Database protocol."""
    return driver
