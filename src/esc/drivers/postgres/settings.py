"""What the driver knows about its node: names, paths, ports, limits. No I/O."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from esc.accounts import MANAGER_USER
from esc.errors import ConfigError

REPL_ROLE = "replicator"
# escmanager's own role: no superuser, owner of the application database and its tables only,
# reached by peer authentication from the OS user of the same name (the agent runs the
# manager as that user) through the socket, whose directory that user's group may enter.
APP_ROLE = MANAGER_USER
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

START_TIMEOUT_S = 60  # pg_ctl start -w: crash recovery of a large WAL backlog included
STANDBY_START_TIMEOUT_S = 30  # a reconfigured standby that is not consistent by then: re-clone
STOP_TIMEOUT_S = 30  # fast shutdown; escalates to immediate after this
PROMOTE_TIMEOUT_S = 60
BASEBACKUP_TIMEOUT_S = 6 * 3600
STATUS_TIMEOUT_MS = 2000  # statement_timeout of the status connection (server side)
STATUS_WATCHDOG_S = 1.5  # client side: a stopped server never enforces statement_timeout


def slot_name(node_name: str) -> str:
    """A node's replication slot: its name in lower case, every other character ``_``.

    Slot names allow only ``[a-z0-9_]``; node names may hold ``-`` and ``.``."""
    return re.sub(r"[^a-z0-9_]", "_", node_name.lower())[:63]


@dataclass(frozen=True)
class PgNode:
    """The local cluster of one node and its peer, as :class:`PostgresDriver` was built."""

    node_name: str
    peer_name: str
    pgdata: Path
    data_root: Path
    socket_dir: Path
    port: int
    listen: str
    peer_host: str
    peer_port: int
    password: str = field(repr=False)
    bindir: Path
    log_file: Path
    db_name: str
    os_user: str
    replicated: bool  # False: cinder mode, no standby, no slot for the peer
    slot_keep_mb: int
    # The pair CA's certificate, this node's certificate and key (``<etc>/pki``, root's);
    # None: no TLS (a driver built alone, in tests). The server and the tools use copies owned
    # by postgres in ``tls_dir``.
    pki: Path | None = None
    # The OS group (the manager's) that may reach the socket: the directory 0750 and the
    # socket 0770 for it. None: only root and postgres (a driver built alone, in tests).
    app_group: str | None = None

    @property
    def tls_dir(self) -> Path | None:
        return None if self.pki is None else self.data_root / "pgtls"

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

    def bin(self, name: str) -> str:
        return str(self.bindir / name)

    def require_password(self) -> str:
        if not self.password:
            raise ConfigError("replication.password", "must be set for replication")
        return self.password
