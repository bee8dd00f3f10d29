"""The activation switch: one Manager per process, active only while the agent says so.

Activation is a message, not a process start: the pool is already open (it has been retrying
since the process started), so activating costs a read-only check, the schema migrations (a
version query when none is pending) and starting the worker, which resumes half-done
transactions in the background.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from psycopg_pool import PoolTimeout
from pydantic import BaseModel, ConfigDict, Field

from esc.errors import ServiceError
from esc.manager.auth import Authenticator, PgUsers
from esc.manager.callbacks import CallbackGuard
from esc.manager.control import ControlStatus
from esc.manager.db import make_pool, migrate
from esc.manager.tickets import PgTickets
from esc.manager.vim import Vim
from esc.manager.worker import Worker, WorkerTuning

log = logging.getLogger(__name__)

ACTIVATE_TIMEOUT_S = 3.0
HEALTH_TIMEOUT_S = 1.0
# The health check's query: the role, and what tells a restart of the server (its start time)
# or broken connections (another backend behind the health check's own connection).
_HEALTH_SQL = "SELECT pg_is_in_recovery(), pg_postmaster_start_time(), pg_backend_pid()"
_DB_ERRORS = (psycopg.Error, PoolTimeout, OSError, TimeoutError)


class Manager:
    """The service state shared by the northbound API and the control socket."""

    def __init__(
        self,
        node_name: str,
        conninfo: str,
        vim: Vim,
        tuning: WorkerTuning | None = None,
        shared_storage: bool = False,
        login_key: bytes | None = None,
        callbacks: CallbackGuard | None = None,
    ) -> None:
        self.node_name = node_name
        # ha_mode cinder: the database lives on a volume only the primary mounts, so an
        # inactive node has no database to reach and that is not a fault.
        self.shared_storage = shared_storage
        self.pool = make_pool(conninfo)
        # The health check's own connection: with the synchronous standby lost, every
        # northbound commit waits (up to the standby-loss grace) holding a connection of the
        # pool, and a check that queued behind them would report a working database as
        # unreachable; the agent would then close the gate before the grace could run out.
        self.health_pool = make_pool(conninfo, min_size=1, max_size=1, name="escmanager-health")
        # one for the API and the portal: a client's failed logins count on both
        # with the pair's key, login tickets carry a check over a failover (tickets.py)
        self.authenticator = Authenticator(
            PgUsers(self.pool), tickets=PgTickets(self.pool), ticket_key=login_key
        )
        self.vim = vim
        self.tuning = tuning or WorkerTuning()
        self.callbacks = callbacks or CallbackGuard()  # the API's and the worker's
        self.active = False
        # Quorum mode: the instant (time.monotonic, this host's) until which the agent's lease
        # lets this node serve; renewed by the agent every cycle. Not renewed in time (the
        # agent stuck or frozen), the manager stops serving at that instant by itself: the
        # backstop of a lease the agent can no longer act on. None: no bound (two-node mode).
        self.serve_until: float | None = None
        self._lease_timer: asyncio.TimerHandle | None = None
        self._lease_task: asyncio.Task[None] | None = None
        self.primary: str | None = None
        self.primary_url: str | None = None
        self.worker: Worker | None = None
        self._switch = asyncio.Lock()
        # (server start, health backend) when the pool was last checked, and the check under
        # way (_refresh_pool_if_restarted)
        self._pool_checked_for: tuple[object, ...] | None = None
        self._pool_refresh: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Open the pool without waiting for the database: it keeps retrying in the back."""
        await self.pool.open(wait=False)
        await self.health_pool.open(wait=False)

    async def close(self) -> None:
        await self._stop_worker()
        await self.pool.close()
        await self.health_pool.close()

    @property
    def serving(self) -> bool:
        """Active, and the agent's lease (if any) not over: northbound requests are served."""
        return self.active and (self.serve_until is None or time.monotonic() < self.serve_until)

    def set_lease(self, until: float | None) -> None:
        """Serve until ``until`` (time.monotonic) unless renewed; None: without a bound."""
        self.serve_until = until
        if self._lease_timer is not None:
            self._lease_timer.cancel()
            self._lease_timer = None
        if until is not None and self.active:
            delay = max(0.0, until - time.monotonic())
            loop = asyncio.get_running_loop()
            self._lease_timer = loop.call_later(delay, self._lease_ran_out, until)

    def _lease_ran_out(self, until: float) -> None:
        self._lease_timer = None
        if self.serve_until != until or not self.active:
            return
        log.warning(
            "the agent's lease ran out %.3f s ago without a renewal (the agent stuck, or cut "
            "off from etcd): deactivating",
            time.monotonic() - until,
        )
        task = asyncio.get_running_loop().create_task(self.deactivate(None, None))
        self._lease_task = task  # (kept referenced until it is done)

    async def activate(self, primary: str, until: float | None = None) -> None:
        if until is not None and time.monotonic() >= until:
            raise ServiceError("not activating: the agent's lease is already over")
        self.set_lease(until)
        async with self._switch:
            if primary != self.node_name:
                log.warning(
                    "activate names %r as primary; this node is %r", primary, self.node_name
                )
            if self.active:
                self.primary = primary
                self.set_lease(until)
                return
            start = time.monotonic()
            try:
                async with asyncio.timeout(ACTIVATE_TIMEOUT_S):
                    await self._check_pool_after_restart()
                    async with self.pool.connection() as conn:
                        cur = await conn.execute("SELECT pg_is_in_recovery()")
                        row = await cur.fetchone()
                        await conn.rollback()
                        if row is None or row[0]:
                            raise ServiceError(
                                "database is a standby (in recovery): not activating"
                            )
                        applied = await migrate(conn)
            except _DB_ERRORS as exc:
                raise ServiceError(f"database not usable: {exc or type(exc).__name__}") from exc
            if self.serve_until is not None and time.monotonic() >= self.serve_until:
                raise ServiceError("not activating: the agent's lease ran out meanwhile")
            self.worker = Worker(self.pool, self.vim, self.tuning, self.callbacks)
            self.worker.start()  # resumes pending and half-done transactions in the background
            self.active = True
            self.primary, self.primary_url = primary, None
            self.set_lease(self.serve_until)  # arms the timer, now that it is active
            log.info(
                "activated (primary %s) in %.1f ms%s",
                primary,
                (time.monotonic() - start) * 1000,
                f", schema migrations {applied}" if applied else "",
            )

    def _refresh_pool_if_restarted(self, seen: tuple[object, ...]) -> None:
        """The database restarted or broke its connections since the pool was last checked
        (a rewind, a restart as a standby, a crash of a backend): every pooled connection is
        broken, and a checkout sleeps a second after each broken one it meets. Test them all
        now, in the background, so the pool is whole again before this node is activated (and
        serves as fast as one whose database never restarted). Told by the health check's own
        connection: another server start, or another backend behind it (broken too)."""
        if seen == self._pool_checked_for or self._pool_refresh is not None:
            return

        async def refresh() -> None:
            try:
                await self.pool.check()
                self._pool_checked_for = seen
            except Exception as exc:  # the next health check tries again
                log.warning("pool check after a database restart failed: %s", exc)
            finally:
                self._pool_refresh = None

        self._pool_refresh = asyncio.get_running_loop().create_task(refresh())

    async def _check_pool_after_restart(self) -> None:
        """Before activating: what the health check saw, or would see now (one query)."""
        async with self.health_pool.connection() as conn:
            cur = await conn.execute(_HEALTH_SQL)
            row = await cur.fetchone()
            await conn.rollback()
        if row is not None:
            self._refresh_pool_if_restarted(tuple(row[1:]))
        if self._pool_refresh is not None:
            await asyncio.shield(self._pool_refresh)

    async def deactivate(self, primary: str | None, primary_url: str | None) -> None:
        async with self._switch:
            was = self.active
            self.active = False  # first: no new northbound write is accepted from here on
            if self._lease_timer is not None:
                self._lease_timer.cancel()
                self._lease_timer = None
            self.primary, self.primary_url = primary, primary_url
            await self._stop_worker()
            if was:
                log.info("deactivated; primary is now %s", primary or "unknown")

    async def _stop_worker(self) -> None:
        if self.worker is not None:
            await self.worker.stop()
            self.worker = None

    def wake_worker(self) -> None:
        if self.worker is not None:
            self.worker.wake()

    async def status(self) -> ControlStatus:
        """healthy: the process works and its database answers (active: and is writable)."""
        active = self.active
        try:
            async with asyncio.timeout(HEALTH_TIMEOUT_S), self.health_pool.connection() as conn:
                cur = await conn.execute(_HEALTH_SQL)
                row = await cur.fetchone()
                await conn.rollback()
        except _DB_ERRORS as exc:
            why = str(exc) or type(exc).__name__
            if self.shared_storage and not active:
                return ControlStatus(
                    False,
                    True,
                    f"inactive (primary {self.primary or 'unknown'}), database on the shared "
                    "volume of the primary",
                )
            return ControlStatus(active, False, f"database unreachable: {why}")
        in_recovery = bool(row and row[0])
        if row is not None:
            self._refresh_pool_if_restarted(tuple(row[1:]))
        if active and in_recovery:
            return ControlStatus(True, False, "active but the database is read-only (standby)")
        if active:
            busy = self.worker.busy if self.worker else 0
            return ControlStatus(True, True, f"active, database writable, {busy} running")
        role = "standby" if in_recovery else "primary"
        return ControlStatus(
            False, True, f"inactive (primary {self.primary or 'unknown'}), database {role}"
        )


class _Activate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    primary: str = Field(min_length=1, max_length=255)
    until: float | None = Field(default=None, ge=0, allow_inf_nan=False)


class _Lease(BaseModel):
    model_config = ConfigDict(extra="forbid")
    until: float | None = Field(ge=0, allow_inf_nan=False)


class _Deactivate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    primary: str | None = Field(default=None, max_length=255)
    primary_url: str | None = Field(default=None, max_length=2048)


def _status_json(st: ControlStatus) -> dict[str, Any]:
    return {"active": st.active, "healthy": st.healthy, "detail": st.detail}


def build_control_app(manager: Manager) -> FastAPI:
    """The agent's control API; served only on the root-only unix socket."""
    app = FastAPI(title="escmanager control", openapi_url=None, docs_url=None, redoc_url=None)

    @app.exception_handler(ServiceError)
    async def _refused(_req: Request, exc: ServiceError) -> JSONResponse:
        log.warning("control: %s", exc)
        return JSONResponse({"detail": str(exc)}, status_code=503)

    @app.post("/control/activate")
    async def activate(body: _Activate) -> dict[str, Any]:
        await manager.activate(body.primary, body.until)
        return _status_json(ControlStatus(True, True, f"active (primary {body.primary})"))

    @app.post("/control/lease")
    async def lease(body: _Lease) -> dict[str, Any]:
        manager.set_lease(body.until)
        return {"serving": manager.serving}

    @app.post("/control/deactivate")
    async def deactivate(body: _Deactivate) -> dict[str, Any]:
        await manager.deactivate(body.primary, body.primary_url)
        return _status_json(ControlStatus(False, True, f"inactive (primary {body.primary})"))

    @app.get("/control/status")
    async def status() -> dict[str, Any]:
        return _status_json(await manager.status())

    return app
