"""The driver's connections to PostgreSQL: the kept status connection (its query bounded by a
watchdog as well as by statement_timeout), short local superuser sessions, the replication role's
session on the peer, and the conninfo strings the tools get. Every psycopg failure leaves as
:class:`DbError`.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Iterator, Sequence
from typing import Any, TypeAlias

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from esc.drivers.postgres.settings import (
    REPL_ROLE,
    STATUS_TIMEOUT_MS,
    STATUS_WATCHDOG_S,
    SUPERUSER,
    PgNode,
)
from esc.errors import DbError

Connection: TypeAlias = psycopg.Connection[tuple[Any, ...]]


def is_connection_failure(stderr: str) -> bool:
    """libpq's words for "the server could not be reached" (C locale)."""
    return any(
        words in stderr
        for words in ("could not connect", "connection to server", "server closed the connection")
    )


def _shutdown_socket(conn: Connection, fired: threading.Event) -> None:
    """Unblock a query waiting on a server that does not answer (watchdog callback)."""
    fired.set()
    with contextlib.suppress(OSError, psycopg.Error):
        sock = socket.socket(fileno=os.dup(conn.pgconn.socket))
        try:
            sock.shutdown(socket.SHUT_RDWR)
        finally:
            sock.close()


class Sessions:
    """Connections of one node's driver, local (peer authentication over the socket) and to
    the peer (the replication role, its password a keyword: in no argv and no conninfo)."""

    def __init__(self, node: PgNode) -> None:
        self.node = node
        self._conn: Connection | None = None

    def _local_kwargs(self, dbname: str, statement_timeout_ms: int) -> dict[str, Any]:
        return {
            "host": str(self.node.socket_dir),
            "port": self.node.port,
            "user": SUPERUSER,  # peer authentication: we run as root (or as postgres)
            "dbname": dbname,
            "connect_timeout": 2,  # libpq's minimum; a unix socket answers at once anyway
            "application_name": "esc-agent",
            "options": f"-c statement_timeout={statement_timeout_ms}",
            "autocommit": True,
        }

    def connection(self) -> Connection:
        """The kept status connection (statement_timeout bounds every status look)."""
        if self._conn is None or self._conn.closed:
            try:
                self._conn = psycopg.connect(**self._local_kwargs("postgres", STATUS_TIMEOUT_MS))
            except psycopg.Error as exc:
                raise DbError(f"{self.node.node_name}: cannot connect: {exc}") from exc
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None

    @contextlib.contextmanager
    def session(
        self, dbname: str = "postgres", statement_timeout_ms: int = 0
    ) -> Iterator[Connection]:
        """A short-lived local superuser session for work longer than a status look."""
        try:
            conn = psycopg.connect(**self._local_kwargs(dbname, statement_timeout_ms))
        except psycopg.Error as exc:
            raise DbError(f"{self.node.node_name}: cannot connect to {dbname}: {exc}") from exc
        try:
            yield conn
        finally:
            conn.close()

    @contextlib.contextmanager
    def peer_session(self, host: str, dbname: str = "postgres") -> Iterator[Connection]:
        """The replication role's session on the (new) primary; the password is a keyword,
        so it is in no argv and no conninfo string we might log."""
        try:
            info = make_conninfo(
                **self.tls_params(),
                host=host.strip("[]"),
                port=self.node.peer_port,
                user=REPL_ROLE,
                dbname=dbname,
                connect_timeout=3,
                application_name=f"esc-{self.node.node_name}",
            )
            conn = psycopg.connect(info, password=self.node.password, autocommit=True)
        except psycopg.Error as exc:
            raise DbError(f"cannot reach primary {host}:{self.node.peer_port}: {exc}") from exc
        try:
            yield conn
        finally:
            conn.close()

    def exec(
        self,
        conn: Connection,
        query: str | sql.Composed,
        params: Sequence[Any] | None = None,
    ) -> list[tuple[Any, ...]]:
        """Run one statement; psycopg errors become DbError (the SQL never holds a secret)."""
        try:
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description is not None else []
        except psycopg.Error as exc:
            raise DbError(f"{self.node.node_name}: {exc}") from exc

    def status_row(self, query: str) -> tuple[Any, ...]:
        """The status ``query`` on the kept connection; one reconnect (the server restarted).

        statement_timeout is enforced by the server, so a stopped (SIGSTOP) or hung server
        would block the agent's cycle forever: a watchdog shuts the socket down instead."""
        for attempt in (1, 2):
            timed_out = threading.Event()
            try:
                conn = self.connection()
                timer = threading.Timer(STATUS_WATCHDOG_S, _shutdown_socket, (conn, timed_out))
                timer.start()
                try:
                    row = conn.execute(query).fetchone()
                finally:
                    timer.cancel()
                assert row is not None
                return row
            except psycopg.Error as exc:
                self.close()
                if attempt == 2 or timed_out.is_set():
                    why = f"no answer in {STATUS_WATCHDOG_S:.1f} s" if timed_out.is_set() else exc
                    raise DbError(f"{self.node.node_name}: status query failed: {why}") from exc
        raise AssertionError("unreachable")

    def query_one(self, query: str) -> Any:
        try:
            row = self.connection().execute(query).fetchone()
        except psycopg.Error as exc:
            self.close()
            raise DbError(f"{self.node.node_name}: {exc}") from exc
        return None if row is None else row[0]

    def tls_params(self) -> dict[str, str]:
        """TLS to the peer, which must show a certificate of the pair's CA naming the address
        dialled (``verify-full``); ours is shown for its ``clientcert=verify-ca``."""
        d = self.node.tls_dir
        if d is None:
            return {}
        return {
            "sslmode": "verify-full",
            "sslrootcert": str(d / "ca.crt"),
            "sslcert": str(d / "host.crt"),
            "sslkey": str(d / "host.key"),
            "ssl_min_protocol_version": "TLSv1.3",
        }

    def primary_conninfo(self, host: str) -> str:
        """The standby's conninfo: password from the passfile, keepalives so a dead primary is
        noticed in seconds even if wal_receiver_timeout were raised."""
        return make_conninfo(
            **self.tls_params(),
            host=host.strip("[]"),
            port=self.node.peer_port,
            user=REPL_ROLE,
            passfile=str(self.node.passfile),
            application_name=self.node.node_name,
            connect_timeout=2,
            keepalives=1,
            keepalives_idle=2,
            keepalives_interval=1,
            keepalives_count=3,
        )

    def source_conninfo(self, host: str) -> str:
        return make_conninfo(
            **self.tls_params(),
            host=host.strip("[]"),
            port=self.node.peer_port,
            user=REPL_ROLE,
            dbname="postgres",
            passfile=str(self.node.passfile),
            connect_timeout=5,
        )
