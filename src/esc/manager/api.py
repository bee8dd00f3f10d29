"""The northbound REST API under /v0 (FastAPI).

Order of checks for every request, in two plain ASGI layers in front of the routes:
inactive → 503 naming the primary (no credentials needed to learn where to go); too many
failed logins → 429 with Retry-After (before the password is looked at); no or wrong
credentials → 401; a write by a ``read-only`` user → 403 naming the role; then the route
validates its input (422 naming the field).
Every write answers 202 with the transaction, its id also in ``ESC-Transaction-Id``.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

import psycopg
from fastapi import Depends, FastAPI, Header, Path, Query, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from psycopg_pool import PoolTimeout
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from esc.config.manager import MIB
from esc.manager import paging, store
from esc.manager.auth import (
    REFUSED,
    CredentialCheck,
    Verdict,
    allowed,
    document_auth,
    parse_basic,
)
from esc.manager.callbacks import CallbackGuard, CallbackRefused, PinnedCallback
from esc.manager.models import (
    AFTER_DOC,
    NAME_PATTERN,
    TXID_PATTERN,
    Deployment,
    DeploymentCreate,
    DeploymentPage,
    Tenant,
    TenantCreate,
    TenantPage,
    Transaction,
    TransactionPage,
    TxState,
    pick_transaction_id,
)
from esc.manager.responses import NOT_FOUND, accepted, ok
from esc.manager.service import Manager
from esc.manager.transport import BodyLimit

log = logging.getLogger(__name__)

# the database is down, restarting, or was demoted under us: the client should retry (elsewhere)
_DB_ERRORS = (psycopg.OperationalError, psycopg.errors.ReadOnlySqlTransaction, PoolTimeout)
_RETRY = {"Retry-After": "1"}
_CHALLENGE = {"WWW-Authenticate": 'Basic realm="esc", charset="UTF-8"'}

TxIdHeader = Annotated[
    str | None,
    Header(
        alias="ESC-Transaction-Id",
        description="Client-chosen transaction id: a retry with the same id is answered "
        "with the original transaction and never executed twice.",
        pattern=TXID_PATTERN,
    ),
]
IdemHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key", description="Same as ESC-Transaction-Id.", pattern=TXID_PATTERN
    ),
]
CallbackHeader = Annotated[
    str | None,
    Header(
        alias="Callback",
        description="http(s) URL that receives a POST when the transaction ends. Its host "
        "(every address a name resolves to) must be allowed by manager.callback_networks; "
        "loopback, link-local, metadata, unspecified and multicast addresses are refused "
        "(422 naming Callback). The POST goes to the address checked here.",
        max_length=2048,
    ),
]
NamePath = Annotated[str, Path(pattern=NAME_PATTERN)]


@dataclass(frozen=True)
class WriteHeaders:
    """What every write takes besides its body: the request line, the client's transaction id
    (``ESC-Transaction-Id`` or ``Idempotency-Key``) and the ``Callback``, checked and pinned."""

    method: str
    path: str
    transaction_id: str | None
    callback: PinnedCallback | None


async def _write_headers(
    request: Request,
    txid: TxIdHeader = None,
    idem: IdemHeader = None,
    callback: CallbackHeader = None,
) -> WriteHeaders:
    try:
        client_id = pick_transaction_id(txid, idem)
        guard: CallbackGuard = request.app.state.callbacks
        pinned = None if callback is None else await guard.pin(callback)
    except CallbackRefused as exc:
        raise store.RequestError(422, str(exc), field="Callback") from None
    except ValueError as exc:
        field = str(exc).split(":", 1)[0]
        raise store.RequestError(422, str(exc), field=field) from None
    return WriteHeaders(request.method, request.url.path, client_id, pinned)


Writes = Annotated[WriteHeaders, Depends(_write_headers)]


async def _connection(request: Request) -> AsyncIterator[store.Conn]:
    manager: Manager = request.app.state.manager
    async with manager.pool.connection() as conn:
        yield conn


Db = Annotated[store.Conn, Depends(_connection)]
Limit = Annotated[int, Query(ge=1, le=1000, description="At most this many rows per page.")]
After = Annotated[str | None, Query(description=AFTER_DOC, max_length=paging.MAX_CURSOR)]
K = TypeVar("K")


def _after(read: Callable[[str], K], after: str | None) -> K | None:
    """The decoded cursor, or None for the first page; 422 naming ``after`` when it is not one."""
    if after is None:
        return None
    try:
        return read(after)
    except paging.CursorError as exc:
        raise store.RequestError(422, str(exc), field="after") from None


def _page(
    request: Request, key: str, page: store.Page, params: list[tuple[str, str | int | None]]
) -> dict[str, Any]:
    return {key: page.items, "next": paging.next_link(request.url.path, params, page.next_after)}


class ActiveGate:
    """503 + the primary's identity while this node is not the active one."""

    def __init__(self, app: ASGIApp, manager: Manager) -> None:
        self.app = app
        self.manager = manager

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self.manager.serving:
            m = self.manager
            fenced = m.active  # active but its lease ran out: the primary is not known here
            body = {
                "detail": f"this node ({m.node_name}) is not the primary",
                "primary": None if fenced else m.primary,
                "primary_url": None if fenced else m.primary_url,
            }
            await JSONResponse(body, status_code=503, headers=_RETRY)(scope, receive, send)
            return
        await self.app(scope, receive, send)


class BasicAuth:
    """401 unless the request carries valid basic credentials (every path, OpenAPI too), 429
    while its client or user is backed off (auth.py), 403 for a write the user's role may not
    make. The user and role are left in the request's state."""

    def __init__(self, app: ASGIApp, auth: CredentialCheck) -> None:
        self.app = app
        self.auth = auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                header = value.decode("latin-1")
                break
        creds = parse_basic(header)
        client = scope.get("client")
        try:
            verdict = REFUSED
            if creds is not None:
                verdict = await self.auth.check(*creds, client=client[0] if client else None)
        except (psycopg.Error, PoolTimeout) as exc:
            log.warning("auth: database unavailable: %s", exc)
            resp = JSONResponse({"detail": "database unavailable"}, status_code=503, headers=_RETRY)
            await resp(scope, receive, send)
            return
        if creds is None or verdict.role is None or verdict.retry_after:
            await _refusal(creds, verdict)(scope, receive, send)
            return
        if not allowed(verdict.role, scope["method"]):
            body = {
                "detail": f"user {creds[0]!r} has role {verdict.role}: it may only read",
                "role": verdict.role,
            }
            await JSONResponse(body, status_code=403)(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        state["user"], state["role"] = creds[0], verdict.role
        await self.app(scope, receive, send)


def _refusal(creds: tuple[str, str] | None, verdict: Verdict) -> JSONResponse:
    """429 while backed off, else 401 with the challenge."""
    if verdict.retry_after:
        wait = verdict.retry_after
        return JSONResponse(
            {"detail": f"too many failed logins: retry in {wait} s"},
            status_code=429,
            headers={"Retry-After": str(wait)},
        )
    body = {"detail": "authentication required" if creds is None else "bad credentials"}
    return JSONResponse(body, status_code=401, headers=_CHALLENGE)


def _field(loc: tuple[Any, ...] | list[Any], kind: str) -> str:
    parts = list(loc)
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    if kind == "json_invalid" or not parts:
        return "body"
    return ".".join(str(p) for p in parts)


def build_api(
    manager: Manager,
    *,
    max_body_bytes: int = MIB,
    callbacks: CallbackGuard | None = None,
    auth: CredentialCheck | None = None,
) -> ASGIApp:
    """The API app: the active gate, basic authentication, the body limit, the routes.
    ``callbacks`` checks Callback headers (default: the refused classes, the system resolver);
    ``auth`` is the credential check (default: the users table)."""
    app = FastAPI(
        title="ESC-HA northbound API",
        version="0",
        description="Tenants, deployments and their transactions. Every write is a durable "
        "transaction answered with 202; see ESC-Transaction-Id and Callback.",
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )

    app.state.manager = manager
    app.state.callbacks = callbacks if callbacks is not None else manager.callbacks

    @app.exception_handler(RequestValidationError)
    async def _invalid(_req: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {
                "field": _field(e.get("loc", ()), e.get("type", "")),
                "message": str(e.get("msg", "")).removeprefix("Value error, "),
            }
            for e in exc.errors()
        ]
        first = errors[0] if errors else {"field": "body", "message": "invalid request"}
        detail = f"{first['field']}: {first['message']}"
        return JSONResponse(
            {"detail": detail, "field": first["field"], "errors": errors}, status_code=422
        )

    @app.exception_handler(HTTPException)
    async def _http(req: Request, exc: HTTPException) -> Any:
        # FastAPI answers 400 for a body it cannot decode (not UTF-8): invalid input like any
        # other, so 422 naming the body, the shape the document declares
        if exc.status_code == 400:
            message = "body: not valid JSON (not UTF-8 text)"
            return JSONResponse({"detail": message, "field": "body"}, status_code=422)
        return await http_exception_handler(req, exc)

    @app.exception_handler(store.RequestError)
    async def _refused(_req: Request, exc: store.RequestError) -> JSONResponse:
        return JSONResponse({"detail": exc.message, "field": exc.field}, status_code=exc.status)

    async def _db_down(_req: Request, exc: Exception) -> JSONResponse:
        log.warning("request failed on the database: %s", exc)
        return JSONResponse({"detail": "database unavailable"}, status_code=503, headers=_RETRY)

    for exc_type in _DB_ERRORS:
        app.add_exception_handler(exc_type, _db_down)

    def _openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            schema.setdefault("components", {})["securitySchemes"] = {
                "basic": {"type": "http", "scheme": "basic"}
            }
            schema["security"] = [{"basic": []}]
            document_auth(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi() -> JSONResponse:
        return JSONResponse(_openapi())

    async def write(
        conn: store.Conn,
        hdrs: WriteHeaders,
        *,
        operation: str,
        resource_type: str,
        body: dict[str, Any] | None,
        effect: store.Effector,
    ) -> JSONResponse:
        callback = hdrs.callback
        req = store.WriteRequest(
            method=hdrs.method,
            path=hdrs.path,
            body=body,
            operation=operation,
            resource_type=resource_type,
            transaction_id=hdrs.transaction_id,
            callback=callback.url if callback else None,
            callback_address=callback.address if callback else None,
        )
        accepted = await store.accept(conn, req, effect)
        headers = {"ESC-Transaction-Id": accepted.transaction_id}
        if accepted.replayed:
            headers["ESC-Transaction-Replayed"] = "true"
        else:
            log.info(
                "accepted %s %s (%s)",
                operation,
                accepted.body["resource_id"],
                accepted.transaction_id,
            )
            if accepted.pending or callback:
                manager.wake_worker()
        return JSONResponse(accepted.body, status_code=202, headers=headers)

    # --- tenants ----------------------------------------------------------------------------

    @app.post(
        "/v0/tenants",
        status_code=202,
        response_model=None,
        tags=["tenants"],
        responses=accepted(),
    )
    async def create_tenant(
        hdrs: Writes,
        conn: Db,
        body: TenantCreate,
    ) -> JSONResponse:
        return await write(
            conn,
            hdrs,
            operation="CREATE_TENANT",
            resource_type="tenant",
            body=body.model_dump(mode="json"),
            effect=store.create_tenant(body),
        )

    @app.get("/v0/tenants", tags=["tenants"], response_model=None, responses=ok(TenantPage))
    async def list_tenants(
        request: Request, conn: Db, limit: Limit = 1000, after: After = None
    ) -> dict[str, Any]:
        """Tenants by name, `limit` per page; follow `next` for the rest."""
        page = await store.list_tenants(conn, limit, _after(paging.read_tenant_cursor, after))
        return _page(request, "tenants", page, [("limit", limit)])

    @app.get(
        "/v0/tenants/{name}",
        tags=["tenants"],
        response_model=None,
        responses=ok(Tenant, "The tenant.", NOT_FOUND),
    )
    async def get_tenant(conn: Db, name: NamePath) -> dict[str, Any]:
        found = await store.get_tenant(conn, name)
        if found is None:
            raise store.RequestError(404, f"no tenant {name!r}", field="name")
        return found

    @app.delete(
        "/v0/tenants/{name}",
        status_code=202,
        response_model=None,
        tags=["tenants"],
        responses=accepted(NOT_FOUND),
    )
    async def delete_tenant(
        hdrs: Writes,
        conn: Db,
        name: NamePath,
    ) -> JSONResponse:
        return await write(
            conn,
            hdrs,
            operation="DELETE_TENANT",
            resource_type="tenant",
            body=None,
            effect=store.delete_tenant(name),
        )

    # --- deployments ------------------------------------------------------------------------

    @app.post(
        "/v0/deployments",
        status_code=202,
        response_model=None,
        tags=["deployments"],
        responses=accepted(),
    )
    async def create_deployment(
        hdrs: Writes,
        conn: Db,
        body: DeploymentCreate,
    ) -> JSONResponse:
        return await write(
            conn,
            hdrs,
            operation="CREATE_DEPLOYMENT",
            resource_type="deployment",
            body=body.model_dump(mode="json"),
            effect=store.create_deployment(body),
        )

    @app.get(
        "/v0/deployments",
        tags=["deployments"],
        response_model=None,
        responses=ok(DeploymentPage),
    )
    async def list_deployments(
        request: Request,
        conn: Db,
        tenant: Annotated[str | None, Query(pattern=NAME_PATTERN)] = None,
        limit: Limit = 1000,
        after: After = None,
    ) -> dict[str, Any]:
        """Deployments oldest first, by (created_at, id), `limit` per page; follow `next`."""
        key = _after(paging.read_deployment_cursor, after)
        page = await store.list_deployments(conn, tenant, limit, key)
        return _page(request, "deployments", page, [("tenant", tenant), ("limit", limit)])

    @app.get(
        "/v0/deployments/{deployment_id}",
        tags=["deployments"],
        response_model=None,
        responses=ok(Deployment, "The deployment.", NOT_FOUND),
    )
    async def get_deployment(conn: Db, deployment_id: uuid.UUID) -> dict[str, Any]:
        found = await store.get_deployment(conn, str(deployment_id))
        if found is None:
            raise store.RequestError(404, f"no deployment {deployment_id}", field="deployment_id")
        return found

    @app.delete(
        "/v0/deployments/{deployment_id}",
        status_code=202,
        response_model=None,
        tags=["deployments"],
        responses=accepted(NOT_FOUND),
    )
    async def delete_deployment(
        hdrs: Writes,
        conn: Db,
        deployment_id: uuid.UUID,
    ) -> JSONResponse:
        return await write(
            conn,
            hdrs,
            operation="DELETE_DEPLOYMENT",
            resource_type="deployment",
            body=None,
            effect=store.delete_deployment(str(deployment_id)),
        )

    # --- transactions -----------------------------------------------------------------------

    @app.get(
        "/v0/transactions",
        tags=["transactions"],
        response_model=None,
        responses=ok(TransactionPage),
    )
    async def list_transactions(
        request: Request,
        conn: Db,
        state: TxState | None = None,
        limit: Limit = 100,
        after: After = None,
    ) -> dict[str, Any]:
        """Transactions newest first (in the order they were accepted), `limit` per page;
        follow `next` for older ones."""
        key = _after(paging.read_transaction_cursor, after)
        page = await store.list_transactions(conn, state, limit, key)
        return _page(request, "transactions", page, [("state", state), ("limit", limit)])

    @app.get(
        "/v0/transactions/{transaction_id}",
        tags=["transactions"],
        response_model=None,
        responses=ok(Transaction, "The transaction.", NOT_FOUND),
    )
    async def get_transaction(
        conn: Db, transaction_id: Annotated[str, Path(pattern=TXID_PATTERN)]
    ) -> dict[str, Any]:
        found = await store.get_transaction(conn, transaction_id)
        if found is None:
            raise store.RequestError(
                404, f"no transaction {transaction_id!r}", field="transaction_id"
            )
        return found

    return ActiveGate(
        BasicAuth(BodyLimit(app, max_body_bytes), auth or manager.authenticator), manager
    )
