"""What makes a primary: initdb with the shared settings, the replication role and its grants,
the peer's slot, the application database; and a promotion onto a timeline of its own."""

from __future__ import annotations

import logging
import time

import psycopg
from psycopg import sql

from esc.drivers.postgres.conf import merge_conf_block, render_shared_conf
from esc.drivers.postgres.session import Connection, Sessions
from esc.drivers.postgres.settings import (
    APP_ROLE,
    PROMOTE_TIMEOUT_S,
    REPL_ROLE,
    REWIND_FUNCTIONS,
    PgNode,
)
from esc.drivers.postgres.tools import PgTools
from esc.errors import DbError
from esc.files import read_nofollow

log = logging.getLogger("esc.drivers.postgres")


# The manager's tables, views and free-standing sequences made before it had a role of its own
# (by the superuser) become its role's; a sequence owned by a column follows its table. In the
# application database only, in its public schema (owned by the database's owner in PG 15).
HAND_OVER_SQL = f"""
DO $$
DECLARE r record;
BEGIN
  FOR r IN
    SELECT c.oid::regclass AS name,
           CASE c.relkind WHEN 'S' THEN 'SEQUENCE' WHEN 'v' THEN 'VIEW'
                          WHEN 'm' THEN 'MATERIALIZED VIEW' ELSE 'TABLE' END AS kind
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'S')
      AND c.relowner <> '{APP_ROLE}'::regrole
      AND NOT EXISTS (SELECT 1 FROM pg_depend d
                      WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                        AND d.deptype IN ('a', 'i'))
  LOOP
    EXECUTE format('ALTER %s %s OWNER TO {APP_ROLE}', r.kind, r.name);
  END LOOP;
END
$$
"""


class Primary:
    """initdb, bootstrap and promotion of the local cluster."""

    def __init__(self, node: PgNode, tools: PgTools, sessions: Sessions) -> None:
        self.node = node
        self.tools = tools
        self.sessions = sessions

    def initdb(self) -> None:
        self.node.data_root.mkdir(parents=True, exist_ok=True)
        self.tools.ensure_dir(self.node.pgdata, 0o700)
        self.tools.run(
            [
                self.node.bin("initdb"),
                "-D",
                str(self.node.pgdata),
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
        conf = self.node.pgdata / "postgresql.conf"
        block = render_shared_conf(
            self.node.node_name,
            self.node.peer_name,
            replicated=self.node.replicated,
            slot_keep_mb=self.node.slot_keep_mb,
        )
        self.tools.write_file(conf, merge_conf_block(read_nofollow(conf), block))

    def bootstrap(self) -> None:
        """Roles, grants, the peer's slot, the application database; idempotent.

        The session commits with synchronous_commit=local: the peer is named synchronous
        before any standby exists, and the DDL would wait forever (gotcha 2)."""
        with self.sessions.session() as conn:
            self.sessions.exec(conn, "SET synchronous_commit = local")
            self.node.require_password()
            verifier = self.scram_verifier(conn)
            exists = self.sessions.exec(
                conn, "SELECT 1 FROM pg_roles WHERE rolname = %s", [REPL_ROLE]
            )
            verb = "ALTER" if exists else "CREATE"
            self.sessions.exec(
                conn,
                sql.SQL("{} ROLE {} WITH LOGIN REPLICATION PASSWORD {}").format(
                    sql.SQL(verb), sql.Identifier(REPL_ROLE), sql.Literal(verifier)
                ),
            )
            for fn in REWIND_FUNCTIONS:
                self.sessions.exec(
                    conn,
                    sql.SQL("GRANT EXECUTE ON FUNCTION {} TO {}").format(
                        sql.SQL(fn), sql.Identifier(REPL_ROLE)
                    ),
                )
            # PG15: CHECKPOINT without superuser, needed before pg_rewind (gotcha 4)
            self.sessions.exec(
                conn, sql.SQL("GRANT pg_checkpoint TO {}").format(sql.Identifier(REPL_ROLE))
            )
            if not self.sessions.exec(
                conn, "SELECT 1 FROM pg_roles WHERE rolname = %s", [APP_ROLE]
            ):
                self.sessions.exec(
                    conn,
                    sql.SQL(
                        "CREATE ROLE {} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE "
                        "NOREPLICATION NOBYPASSRLS"
                    ).format(sql.Identifier(APP_ROLE)),
                )
            db = sql.Identifier(self.node.db_name)
            if not self.sessions.exec(
                conn, "SELECT 1 FROM pg_database WHERE datname = %s", [self.node.db_name]
            ):
                self.sessions.exec(conn, sql.SQL("CREATE DATABASE {}").format(db))
            self.sessions.exec(
                conn,
                sql.SQL("ALTER DATABASE {} OWNER TO {}").format(db, sql.Identifier(APP_ROLE)),
            )
        with self.sessions.session(self.node.db_name) as conn:
            self.sessions.exec(conn, "SET synchronous_commit = local")
            self.sessions.exec(conn, HAND_OVER_SQL)
        self.ensure_peer_slot()

    def scram_verifier(self, conn: Connection) -> str:
        """libpq computes the SCRAM verifier, so the clear password never reaches the server
        (a failed CREATE ROLE would otherwise log it)."""
        try:
            raw = conn.pgconn.encrypt_password(
                self.node.password.encode(), REPL_ROLE.encode(), b"scram-sha-256"
            )
        except psycopg.Error as exc:
            raise DbError(f"cannot encrypt the replication password: {exc}") from exc
        return raw.decode()

    def ensure_peer_slot(self) -> None:
        """The peer's slot, reserving WAL from now, so the peer can rejoin without a gap.
        None without replication: an unused slot would keep WAL forever."""
        if not self.node.replicated:
            return
        with self.sessions.session() as conn:
            self.sessions.exec(
                conn,
                "SELECT pg_create_physical_replication_slot(%s, true) WHERE NOT EXISTS"
                " (SELECT 1 FROM pg_replication_slots WHERE slot_name = %s)",
                [self.node.peer_slot, self.node.peer_slot],
            )

    def reserve_timelines(self, ours: int, above: int) -> None:
        for tli in range(max(ours, 1) + 1, above + 1):
            path = self.node.pgdata / "pg_wal" / f"{tli:08X}.history"
            if path.exists():
                continue
            log.warning(
                "%s: timeline %d is the peer's and was never streamed here: reserving it, "
                "so the promotion opens timeline %d",
                self.node.node_name,
                tli,
                above + 1,
            )
            self.tools.write_file(
                path,
                f"# esc-ha: timeline {tli} belongs to the peer's history, never streamed to "
                f"{self.node.node_name}; reserved so that a promotion here opens another id\n",
            )

    def promote_and_wait(self) -> None:
        """pg_promote(wait => false), then poll every 2 ms: pg_promote's own wait and
        ``pg_ctl promote -w`` both poll in 100 ms steps, three times the promotion itself."""
        with self.sessions.session(statement_timeout_ms=5000) as conn:
            self.sessions.exec(conn, "SELECT pg_promote(false)")
            deadline = time.monotonic() + PROMOTE_TIMEOUT_S
            while self.sessions.exec(conn, "SELECT pg_is_in_recovery()")[0][0]:
                if time.monotonic() > deadline:
                    raise DbError(f"still in recovery {PROMOTE_TIMEOUT_S} s after promote")
                time.sleep(0.002)
