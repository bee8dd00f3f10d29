"""Database connection settings and the versioned schema migrations.

Migrations run only where the database is writable: on activation (the primary) and from
``escadm user`` (which must run on the primary). They are serialised by an advisory lock and
each version commits with its ``schema_version`` row, so a crash mid-way leaves a clean state.
"""

from __future__ import annotations

import logging
import os
import pwd
from typing import Any, LiteralString

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg_pool import AsyncConnectionPool
from psycopg_pool.base import AttemptWithBackoff

from esc.accounts import MANAGER_USER as APP_ROLE
from esc.config.schema import EscConfig, NodePaths

log = logging.getLogger(__name__)

_MIGRATION_LOCK = 0x45534301  # "ESC\x01": pg_advisory_xact_lock key for migrations

# Append only: a published version is never edited, a change is a new version.
MIGRATIONS: tuple[tuple[int, LiteralString], ...] = (
    (
        1,
        """
        CREATE TABLE users (
            name text PRIMARY KEY,
            password_hash text NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE TABLE tenants (
            name text PRIMARY KEY,
            description text NOT NULL DEFAULT '',
            created_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE TABLE deployments (
            id uuid PRIMARY KEY,
            tenant text NOT NULL REFERENCES tenants(name),
            name text NOT NULL,
            spec jsonb NOT NULL,
            state text NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now(),
            UNIQUE (tenant, name)
        );
        CREATE TABLE vms (
            deployment_id uuid NOT NULL REFERENCES deployments(id) ON DELETE CASCADE,
            name text NOT NULL,
            vm_group text NOT NULL,
            ordinal int NOT NULL,
            state text NOT NULL,
            create_attempts int NOT NULL DEFAULT 0,
            updated_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (deployment_id, name)
        );
        CREATE TABLE transactions (
            id text PRIMARY KEY,
            seq bigserial UNIQUE,
            operation text NOT NULL,
            resource_type text NOT NULL,
            resource_id text NOT NULL,
            request jsonb NOT NULL,
            state text NOT NULL,
            status_code int,
            message text NOT NULL DEFAULT '',
            response jsonb NOT NULL,
            result jsonb,
            created_at timestamptz NOT NULL,
            updated_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX transactions_open ON transactions (seq)
            WHERE state IN ('PENDING', 'RUNNING');
        CREATE INDEX transactions_resource ON transactions (resource_type, resource_id);
        CREATE TABLE callbacks (
            transaction_id text PRIMARY KEY REFERENCES transactions(id),
            url text NOT NULL,
            state text NOT NULL DEFAULT 'PENDING',
            attempts int NOT NULL DEFAULT 0,
            next_attempt_at timestamptz NOT NULL DEFAULT now(),
            last_error text NOT NULL DEFAULT '',
            delivered_at timestamptz
        );
        CREATE INDEX callbacks_due ON callbacks (next_attempt_at) WHERE state = 'PENDING';
        """,
    ),
    (
        2,
        # the order of GET /v0/deployments pages, with and without ?tenant= (store.py)
        """
        CREATE INDEX deployments_page ON deployments (created_at, id);
        CREATE INDEX deployments_tenant_page ON deployments (tenant, created_at, id);
        """,
    ),
    (
        3,
        # northbound roles (auth.py): every user made before roles existed could write
        """
        ALTER TABLE users ADD COLUMN IF NOT EXISTS role text NOT NULL DEFAULT 'admin'
            CONSTRAINT users_role CHECK (role IN ('read-only', 'admin'));
        """,
    ),
    (
        4,
        # login tickets (tickets.py): a password check remembered for both nodes
        """
        CREATE TABLE login_tickets (
            mac bytea PRIMARY KEY,
            expires_at timestamptz NOT NULL
        );
        CREATE INDEX login_tickets_expiry ON login_tickets (expires_at);
        """,
    ),
    (
        5,
        # the address a callback's name resolved to when it was checked (callbacks.py): the
        # worker connects there and nowhere else. NULL: a row accepted before the check, which
        # the worker checks (and pins) at delivery instead
        """
        ALTER TABLE callbacks ADD COLUMN address text;
        """,
    ),
)
LATEST = MIGRATIONS[-1][0]

_CREATE_VERSION_TABLE = """
    CREATE TABLE IF NOT EXISTS schema_version (
        version int PRIMARY KEY,
        applied_at timestamptz NOT NULL DEFAULT now()
    )
"""
_CURRENT = "SELECT coalesce(max(version), 0) FROM schema_version"
_HAS_TABLE = "SELECT to_regclass('schema_version') IS NOT NULL"


def db_user() -> str:
    """The role of this process: esc-manager runs as the OS user ``escmanager`` and logs in as
    the role of that name (no superuser; it owns the application database only). root
    (escadm, and the manager in tests run in-process) is let in as ``postgres`` by the
    server's ``esc`` ident map."""
    return APP_ROLE if pwd.getpwuid(os.geteuid()).pw_name == APP_ROLE else "postgres"


def conninfo(cfg: EscConfig, paths: NodePaths) -> str:
    """The local PostgreSQL over its unix socket (``paths.pg_socket_dir``: postgres's, and
    the manager's group's) by ``peer`` authentication, as :func:`db_user`
    (``drivers/postgres/conf.py``)."""
    return make_conninfo(
        host=str(paths.pg_socket_dir),
        port=cfg.database.port,
        dbname=cfg.database.name,
        user=db_user(),
        application_name="escmanager",
        connect_timeout=2,
    )


# psycopg_pool retries a lost database with exponential backoff (1, 2, 4, 8... s). A controller
# must be back within a second of its database (a restart after rewind, a promotion), so retry
# every second instead (a class attribute of psycopg_pool; the pool has no option for it).
AttemptWithBackoff.DELAY_BACKOFF = 1.0


def make_pool(
    info: str, *, min_size: int = 2, max_size: int = 20, name: str = "escmanager"
) -> AsyncConnectionPool:
    """A pool that is opened without waiting: it keeps retrying while the database is down
    and replaces connections a restart or promotion broke (checked on checkout)."""
    return AsyncConnectionPool(
        info,
        min_size=min_size,
        max_size=max_size,
        open=False,
        name=name,
        timeout=3.0,  # a request waits at most this for a connection, then 503
        check=AsyncConnectionPool.check_connection,
        kwargs={"autocommit": False},
    )


async def migrate(conn: psycopg.AsyncConnection[Any]) -> list[int]:
    """Apply pending migrations; return the versions applied (usually none: one query)."""
    async with conn.transaction():
        cur = await conn.execute(_HAS_TABLE)
        row = await cur.fetchone()
        if row is not None and row[0]:
            cur = await conn.execute(_CURRENT)
            row = await cur.fetchone()
            if row is not None and row[0] >= LATEST:
                return []
    applied: list[int] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        await conn.execute(_CREATE_VERSION_TABLE)
        cur = await conn.execute(_CURRENT)
        row = await cur.fetchone()
        current = row[0] if row is not None else 0
        for version, text in MIGRATIONS:
            if version > current:
                await conn.execute(sql.SQL(text))
                await conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (version,))
                applied.append(version)
    if applied:
        log.info("database schema migrated to version %d (applied %s)", LATEST, applied)
    return applied


def migrate_sync(conn: psycopg.Connection[Any]) -> list[int]:
    """The same as :func:`migrate` for synchronous callers (escadm)."""
    applied: list[int] = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        conn.execute(_CREATE_VERSION_TABLE)
        row = conn.execute(_CURRENT).fetchone()
        current = row[0] if row is not None else 0
        for version, text in MIGRATIONS:
            if version > current:
                conn.execute(sql.SQL(text))
                conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (version,))
                applied.append(version)
    return applied
