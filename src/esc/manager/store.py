"""SQL of the northbound API: accepting writes as transactions, and reads.

The rule of this module: a write's transaction row and its effect commit in ONE database
transaction. The transaction row is inserted first (``ON CONFLICT (id) DO NOTHING``), so a
second request with the same id either waits for the first to commit and then reads it back,
or proceeds if the first rolled back: a transaction id is never executed twice.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, LiteralString

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from esc.errors import EscError
from esc.manager import paging
from esc.manager.models import (
    CallbackState,
    DeploymentCreate,
    DeploymentState,
    TenantCreate,
    TxState,
    VmState,
    first_difference,
)

Conn = psycopg.AsyncConnection[Any]
Json = dict[str, Any]


class RequestError(EscError):
    """A request the API refuses with a 4xx; ``field`` names what is wrong when one thing is."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field


@dataclass(frozen=True)
class Effect:
    """What a write did inside its database transaction."""

    resource_id: str
    resource: Json
    done: bool  # complete now (SUCCESS); otherwise the worker carries it out (PENDING)
    message: str


@dataclass(frozen=True)
class Accepted:
    transaction_id: str
    body: Json
    replayed: bool  # the id was known: body is the original answer, nothing was executed
    pending: bool  # the worker has something to do


@dataclass(frozen=True)
class WriteRequest:
    method: str
    path: str
    body: Json | None
    operation: str
    resource_type: str
    transaction_id: str | None
    callback: str | None
    callback_address: str | None = None  # where the callback was checked to go (pinned)

    def fingerprint(self) -> Json:
        return {"method": self.method, "path": self.path, "body": self.body}


def iso(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z")


def transaction_json(
    *,
    txid: str,
    operation: str,
    resource_type: str,
    resource_id: str,
    state: str,
    status_code: int | None,
    message: str,
    created_at: datetime,
    updated_at: datetime,
    resource: Json | None,
    callback: Json | None = None,
) -> Json:
    return {
        "id": txid,
        "operation": operation,
        "resource_type": resource_type,
        "resource_id": resource_id,
        "state": state,
        "status_code": status_code,
        "message": message,
        "created_at": iso(created_at),
        "updated_at": iso(updated_at),
        "resource": resource,
        "callback": callback,
    }


Effector = Callable[[Conn], Awaitable[Effect]]


async def accept(conn: Conn, req: WriteRequest, effect: Effector) -> Accepted:
    """Record the transaction and run its effect in one database transaction."""
    txid = req.transaction_id or str(uuid.uuid4())
    now = datetime.now(UTC)
    original: Json | None = None
    async with conn.transaction():
        cur = await conn.execute(
            "INSERT INTO transactions (id, operation, resource_type, resource_id, request,"
            " state, response, created_at, updated_at)"
            " VALUES (%s, %s, %s, '', %s, %s, '{}', %s, %s)"
            " ON CONFLICT (id) DO NOTHING RETURNING seq",
            (txid, req.operation, req.resource_type, Jsonb(req.fingerprint()), "PENDING", now, now),
        )
        if await cur.fetchone() is None:
            cur = await conn.execute(
                "SELECT request, response FROM transactions WHERE id = %s", (txid,)
            )
            row = await cur.fetchone()
            if row is None:  # deleted in between: cannot happen, transactions are kept
                raise RequestError(409, f"transaction {txid!r} vanished; retry")
            original = {"request": row[0], "response": row[1]}
            # The original may be committed here only: its commit waited for the synchronous
            # standby, and PostgreSQL restarted (or the client gave up) before the standby
            # had it. A replay writes nothing of its own, so its commit would not wait: write
            # WAL of its own (a transactional message: only a transaction that wrote WAL
            # waits, a transaction id alone is not enough), so that its commit waits, like
            # any write, until the standby has everything up to it, the original included.
            await conn.execute("SELECT pg_logical_emit_message(true, 'esc-replay', %s)", (txid,))
        else:
            done = await effect(conn)
            state = TxState.SUCCESS if done.done else TxState.PENDING
            code = 200 if done.done else None
            body = transaction_json(
                txid=txid,
                operation=req.operation,
                resource_type=req.resource_type,
                resource_id=done.resource_id,
                state=state,
                status_code=code,
                message=done.message,
                created_at=now,
                updated_at=now,
                resource=done.resource,
                callback=_callback_json(req.callback, CallbackState.PENDING, 0)
                if req.callback
                else None,
            )
            await conn.execute(
                "UPDATE transactions SET resource_id = %s, state = %s, status_code = %s,"
                " message = %s, response = %s, result = %s WHERE id = %s",
                (
                    done.resource_id,
                    state,
                    code,
                    done.message,
                    Jsonb(body),
                    Jsonb(done.resource) if done.done else None,
                    txid,
                ),
            )
            if req.callback:
                await conn.execute(
                    "INSERT INTO callbacks (transaction_id, url, address) VALUES (%s, %s, %s)",
                    (txid, req.callback, req.callback_address),
                )
            return Accepted(txid, body, replayed=False, pending=not done.done)
    return _replay(txid, req, original)


def _replay(txid: str, req: WriteRequest, original: Json) -> Accepted:
    first = original["request"]
    if (first.get("method"), first.get("path")) != (req.method, req.path):
        raise RequestError(
            409,
            f"transaction id {txid!r} was used for {first.get('method')} {first.get('path')},"
            f" not {req.method} {req.path}",
            field="request",
        )
    diff = first_difference(first.get("body"), req.body)
    if diff is not None:
        raise RequestError(
            409,
            f"transaction id {txid!r} was used for a different request: field {diff!r} differs",
            field=diff,
        )
    return Accepted(txid, original["response"], replayed=True, pending=False)


def _callback_json(url: str | None, state: str, attempts: int) -> Json | None:
    return None if url is None else {"url": url, "state": state, "attempts": attempts}


# --- effects --------------------------------------------------------------------------------


def tenant_json(name: str, description: str, created_at: datetime) -> Json:
    return {"name": name, "description": description, "created_at": iso(created_at)}


def create_tenant(body: TenantCreate) -> Effector:
    async def effect(conn: Conn) -> Effect:
        cur = await conn.execute(
            "INSERT INTO tenants (name, description) VALUES (%s, %s)"
            " ON CONFLICT (name) DO NOTHING RETURNING created_at",
            (body.name, body.description),
        )
        row = await cur.fetchone()
        if row is None:
            raise RequestError(409, f"tenant {body.name!r} already exists", field="name")
        return Effect(
            body.name,
            tenant_json(body.name, body.description, row[0]),
            done=True,
            message=f"tenant {body.name} created",
        )

    return effect


def delete_tenant(name: str) -> Effector:
    async def effect(conn: Conn) -> Effect:
        cur = await conn.execute(
            "SELECT description, created_at FROM tenants WHERE name = %s FOR UPDATE", (name,)
        )
        row = await cur.fetchone()
        if row is None:
            raise RequestError(404, f"no tenant {name!r}", field="tenant")
        cur = await conn.execute("SELECT count(*) FROM deployments WHERE tenant = %s", (name,))
        count = await cur.fetchone()
        if count is not None and count[0]:
            raise RequestError(
                409, f"tenant {name!r} has {count[0]} deployment(s); delete them first"
            )
        await conn.execute("DELETE FROM tenants WHERE name = %s", (name,))
        snapshot = tenant_json(name, row[0], row[1]) | {"state": "DELETED"}
        return Effect(name, snapshot, done=True, message=f"tenant {name} deleted")

    return effect


def create_deployment(body: DeploymentCreate) -> Effector:
    async def effect(conn: Conn) -> Effect:
        cur = await conn.execute(
            "SELECT 1 FROM tenants WHERE name = %s FOR KEY SHARE", (body.tenant,)
        )
        if await cur.fetchone() is None:
            raise RequestError(422, f"tenant: no tenant {body.tenant!r}", field="tenant")
        dep_id = uuid.uuid4()
        spec = body.model_dump(mode="json")
        cur = await conn.execute(
            "INSERT INTO deployments (id, tenant, name, spec, state) VALUES (%s, %s, %s, %s, %s)"
            " ON CONFLICT (tenant, name) DO NOTHING RETURNING id",
            (dep_id, body.tenant, body.name, Jsonb(spec), DeploymentState.DEPLOYING),
        )
        if await cur.fetchone() is None:
            raise RequestError(
                409,
                f"deployment {body.name!r} of tenant {body.tenant!r} already exists",
                field="name",
            )
        async with conn.cursor() as c:
            await c.executemany(
                "INSERT INTO vms (deployment_id, name, vm_group, ordinal, state)"
                " VALUES (%s, %s, %s, %s, %s)",
                [
                    (dep_id, vm, group, i, VmState.PENDING)
                    for i, (vm, group) in enumerate(body.vm_names())
                ],
            )
        snapshot = await get_deployment(conn, str(dep_id))
        assert snapshot is not None
        return Effect(str(dep_id), snapshot, done=False, message=f"deployment {body.name} accepted")

    return effect


def delete_deployment(dep_id: str) -> Effector:
    async def effect(conn: Conn) -> Effect:
        cur = await conn.execute("SELECT 1 FROM deployments WHERE id = %s FOR UPDATE", (dep_id,))
        if await cur.fetchone() is None:
            raise RequestError(404, f"no deployment {dep_id}", field="deployment_id")
        cur = await conn.execute(
            "SELECT id FROM transactions WHERE resource_type = 'deployment'"
            " AND resource_id = %s AND operation = 'DELETE_DEPLOYMENT'"
            " AND state IN ('PENDING', 'RUNNING')",
            (dep_id,),
        )
        busy = await cur.fetchone()
        if busy is not None:
            raise RequestError(409, f"deployment {dep_id} is already being deleted by {busy[0]}")
        snapshot = await get_deployment(conn, dep_id)
        assert snapshot is not None
        return Effect(dep_id, snapshot, done=False, message="deployment deletion accepted")

    return effect


# --- reads ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Page:
    """One page of a list (see :mod:`esc.manager.paging`)."""

    items: list[Json]
    next_after: str | None  # the cursor of the next page; None on the last page


_DEPLOYMENT_SELECT = """
    SELECT d.id::text AS id, d.tenant, d.name, d.state, d.spec, d.created_at, d.updated_at,
           coalesce((SELECT json_agg(json_build_object('name', v.name, 'vm_group', v.vm_group,
                                                        'state', v.state) ORDER BY v.ordinal)
                     FROM vms v WHERE v.deployment_id = d.id), '[]') AS vms
    FROM deployments d
"""


def _deployment_row(row: Json) -> Json:
    return {
        "id": row["id"],
        "tenant": row["tenant"],
        "name": row["name"],
        "state": row["state"],
        "vm_groups": row["spec"]["vm_groups"],
        "vms": row["vms"],
        "created_at": iso(row["created_at"]),
        "updated_at": iso(row["updated_at"]),
    }


async def get_deployment(conn: Conn, dep_id: str) -> Json | None:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_DEPLOYMENT_SELECT + " WHERE d.id = %s", (dep_id,))
        row = await cur.fetchone()
    return None if row is None else _deployment_row(row)


async def list_deployments(
    conn: Conn,
    tenant: str | None,
    limit: int,
    after: tuple[datetime, uuid.UUID] | None = None,
) -> Page:
    """Deployments by (created_at, id), the first ``limit`` after the key ``after``."""
    where: list[LiteralString] = []
    params: list[Any] = []
    if tenant is not None:
        where.append("d.tenant = %s")
        params.append(tenant)
    if after is not None:
        where.append("(d.created_at, d.id) > (%s, %s)")
        params.extend(after)
    query = _DEPLOYMENT_SELECT
    if where:
        query += " WHERE " + " AND ".join(where)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query + " ORDER BY d.created_at, d.id LIMIT %s", (*params, limit + 1))
        rows = await cur.fetchall()
    more, rows = len(rows) > limit, rows[:limit]
    last = rows[-1] if rows else None
    return Page(
        [_deployment_row(r) for r in rows],
        paging.deployment_cursor(last["created_at"], last["id"]) if more and last else None,
    )


async def get_tenant(conn: Conn, name: str) -> Json | None:
    cur = await conn.execute(
        "SELECT name, description, created_at FROM tenants WHERE name = %s", (name,)
    )
    row = await cur.fetchone()
    return None if row is None else tenant_json(row[0], row[1], row[2])


async def list_tenants(conn: Conn, limit: int, after: str | None = None) -> Page:
    """Tenants by name, the first ``limit`` after the name ``after``."""
    if after is None:
        cur = await conn.execute(
            "SELECT name, description, created_at FROM tenants ORDER BY name LIMIT %s",
            (limit + 1,),
        )
    else:
        cur = await conn.execute(
            "SELECT name, description, created_at FROM tenants WHERE name > %s"
            " ORDER BY name LIMIT %s",
            (after, limit + 1),
        )
    rows = await cur.fetchall()
    more, rows = len(rows) > limit, rows[:limit]
    return Page(
        [tenant_json(r[0], r[1], r[2]) for r in rows],
        paging.tenant_cursor(rows[-1][0]) if more and rows else None,
    )


_TX_SELECT = """
    SELECT t.seq, t.id, t.operation, t.resource_type, t.resource_id, t.state, t.status_code,
           t.message, t.created_at, t.updated_at,
           coalesce(t.result, t.response -> 'resource') AS resource,
           c.url AS cb_url, c.state AS cb_state, c.attempts AS cb_attempts
    FROM transactions t LEFT JOIN callbacks c ON c.transaction_id = t.id
"""


def _tx_row(row: Json) -> Json:
    return transaction_json(
        txid=row["id"],
        operation=row["operation"],
        resource_type=row["resource_type"],
        resource_id=row["resource_id"],
        state=row["state"],
        status_code=row["status_code"],
        message=row["message"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        resource=row["resource"],
        callback=_callback_json(row["cb_url"], row["cb_state"], row["cb_attempts"]),
    )


async def get_transaction(conn: Conn, txid: str) -> Json | None:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_TX_SELECT + " WHERE t.id = %s", (txid,))
        row = await cur.fetchone()
    return None if row is None else _tx_row(row)


async def list_transactions(
    conn: Conn, state: str | None, limit: int, after: int | None = None
) -> Page:
    """Transactions newest first (by seq, descending), the first ``limit`` below seq ``after``."""
    where: list[LiteralString] = []
    params: list[Any] = []
    if state is not None:
        where.append("t.state = %s")
        params.append(state)
    if after is not None:
        where.append("t.seq < %s")
        params.append(after)
    query = _TX_SELECT
    if where:
        query += " WHERE " + " AND ".join(where)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query + " ORDER BY t.seq DESC LIMIT %s", (*params, limit + 1))
        rows = await cur.fetchall()
    more, rows = len(rows) > limit, rows[:limit]
    return Page(
        [_tx_row(r) for r in rows],
        paging.transaction_cursor(rows[-1]["seq"]) if more and rows else None,
    )
