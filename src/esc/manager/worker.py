"""Carries out long-running transactions and delivers callbacks; runs only while active.

Everything it knows is in the database, so a new primary picks up where the old one stopped:
a transaction is PENDING → RUNNING → SUCCESS | FAILED, each VM PENDING → CREATING → ACTIVE.
A VM found CREATING on resume may or may not exist: the VIM is asked (and ``create_vm`` is
idempotent by name anyway), so resuming never creates a VM twice. Transactions on one resource
run one at a time in acceptance order (a delete waits for the create before it).

Callbacks are delivered at least once: the row is marked DELIVERED only after the receiver
answered 2xx, so a primary that dies in between makes the next one deliver again, with the
same ``ESC-Transaction-Id``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from esc.manager import store
from esc.manager.callbacks import CallbackGuard, CallbackRefused, PinnedCallback
from esc.manager.models import CallbackState, DeploymentState, TxState, VmState, header_safe
from esc.manager.vim import Vim, VimError, VmSpec

log = logging.getLogger(__name__)

Pool = AsyncConnectionPool[Any]
_DB_ERRORS = (psycopg.Error, PoolTimeout, OSError)


@dataclass(frozen=True)
class WorkerTuning:
    poll_s: float = 1.0  # rescan even without a wake-up (another node's leftovers, retries)
    max_parallel: int = 16  # transactions carried out at once
    vim_attempts: int = 3  # per VM before the transaction fails
    vim_retry_s: float = 0.5
    callback_timeout_s: float = 5.0
    callback_max_attempts: int = 50
    callback_backoff_s: float = 0.5
    callback_backoff_max_s: float = 30.0


def callback_delay(attempts: int, tuning: WorkerTuning) -> float:
    """Seconds to wait after ``attempts`` failed deliveries (exponential, capped)."""
    return float(
        min(tuning.callback_backoff_max_s, tuning.callback_backoff_s * 2 ** max(0, attempts - 1))
    )


def callback_client(tuning: WorkerTuning) -> httpx.AsyncClient:
    """The callbacks' client: no proxy from the environment (it would resolve the name again)
    and no redirect followed (a receiver must not send the controller elsewhere)."""
    return httpx.AsyncClient(
        timeout=tuning.callback_timeout_s, trust_env=False, follow_redirects=False
    )


async def post_callback(
    client: httpx.AsyncClient, pinned: PinnedCallback, headers: dict[str, str], body: Any
) -> str:
    """POST the result to the pinned address (Host and TLS name: the URL's); the error, or ""."""
    target, host, extensions = pinned.request()
    try:
        resp = await client.post(target, json=body, headers=headers | host, extensions=extensions)
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}"
    if not 200 <= resp.status_code < 300:
        return f"receiver answered {resp.status_code}"
    return ""


class Worker:
    """Runs the transaction loop and the callback loop as two tasks until stopped."""

    def __init__(
        self,
        pool: Pool,
        vim: Vim,
        tuning: WorkerTuning | None = None,
        callbacks: CallbackGuard | None = None,
    ) -> None:
        self._pool = pool
        self._callbacks = callbacks or CallbackGuard()
        self._vim = vim
        self._tuning = tuning or WorkerTuning()
        self._wake_tx = asyncio.Event()
        self._wake_cb = asyncio.Event()
        self._running: dict[str, asyncio.Task[None]] = {}
        self._sending: dict[str, asyncio.Task[None]] = {}
        self._loops: list[asyncio.Task[None]] = []
        self._http: httpx.AsyncClient | None = None

    def start(self) -> None:
        if self._loops:
            return
        self._loops = [
            asyncio.create_task(self._loop(self._dispatch_transactions, self._wake_tx), name="tx"),
            asyncio.create_task(self._loop(self._dispatch_callbacks, self._wake_cb), name="cb"),
        ]

    async def stop(self) -> None:
        """Cancel everything at once: what was half-done stays in the database for the next
        primary (or the next activation) to resume."""
        tasks = [*self._loops, *self._running.values(), *self._sending.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._loops = []
        self._running.clear()
        self._sending.clear()
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    def wake(self) -> None:
        self._wake_tx.set()
        self._wake_cb.set()

    @property
    def busy(self) -> int:
        return len(self._running)

    async def _loop(self, dispatch: Callable[[], Awaitable[None]], wake: asyncio.Event) -> None:
        while True:
            wake.clear()
            try:
                await dispatch()
            except _DB_ERRORS as exc:
                log.warning("worker: database unavailable (%s); retrying", exc)
            except Exception:
                log.exception("worker: unexpected error; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout=self._tuning.poll_s)

    # --- transactions -----------------------------------------------------------------------

    async def _dispatch_transactions(self) -> None:
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "SELECT id, operation, resource_type, resource_id FROM transactions"
                " WHERE state IN ('PENDING', 'RUNNING') ORDER BY seq LIMIT 1000"
            )
            rows = await cur.fetchall()
            await conn.rollback()
        seen: set[tuple[str, str]] = set()
        for txid, operation, rtype, rid in rows:
            key = (rtype, rid)
            if key in seen:
                continue  # an earlier transaction on this resource is not finished
            seen.add(key)
            if txid in self._running or len(self._running) >= self._tuning.max_parallel:
                continue
            task = asyncio.create_task(self._execute(txid, operation, rid), name=f"tx:{txid}")
            self._running[txid] = task
            task.add_done_callback(functools.partial(self._finished, txid))

    def _finished(self, txid: str, _task: asyncio.Task[None]) -> None:
        self._running.pop(txid, None)
        self._wake_tx.set()

    def _sent(self, txid: str, _task: asyncio.Task[None]) -> None:
        self._sending.pop(txid, None)

    async def _execute(self, txid: str, operation: str, dep_id: str) -> None:
        try:
            if operation == "CREATE_DEPLOYMENT":
                await self._create_deployment(txid, dep_id)
            elif operation == "DELETE_DEPLOYMENT":
                await self._delete_deployment(txid, dep_id)
            else:
                await self._finish(txid, TxState.FAILED, 500, f"unknown operation {operation}", {})
        except _DB_ERRORS as exc:
            log.warning("transaction %s interrupted by the database (%s); will resume", txid, exc)
            await asyncio.sleep(self._tuning.poll_s)
        except Exception:
            log.exception("transaction %s: unexpected error; will retry", txid)
            await asyncio.sleep(self._tuning.poll_s * 5)

    async def _exec(self, query: Any, params: tuple[Any, ...]) -> None:
        async with self._pool.connection() as conn, conn.transaction():
            await conn.execute(query, params)

    async def _start(self, txid: str) -> None:
        await self._exec(
            "UPDATE transactions SET state = 'RUNNING', updated_at = now()"
            " WHERE id = %s AND state = 'PENDING'",
            (txid,),
        )
        log.info("transaction %s running", txid)

    async def _finish(
        self,
        txid: str,
        state: TxState,
        code: int,
        message: str,
        result: store.Json,
        dep_update: tuple[Any, tuple[Any, ...]] | None = None,
    ) -> None:
        async with self._pool.connection() as conn, conn.transaction():
            if dep_update is not None:
                await conn.execute(dep_update[0], dep_update[1])
            await conn.execute(
                "UPDATE transactions SET state = %s, status_code = %s, message = %s,"
                " result = %s, updated_at = now() WHERE id = %s",
                (state, code, message, Jsonb(result), txid),
            )
        log.info("transaction %s %s: %s", txid, state, message)
        self._wake_cb.set()

    async def _vms(self, dep_id: str) -> tuple[store.Json | None, list[tuple[str, str, str]]]:
        async with self._pool.connection() as conn:
            dep = await store.get_deployment(conn, dep_id)
            cur = await conn.execute(
                "SELECT name, vm_group, state FROM vms WHERE deployment_id = %s ORDER BY ordinal",
                (dep_id,),
            )
            rows = [(r[0], r[1], r[2]) for r in await cur.fetchall()]
            await conn.rollback()
        return dep, rows

    async def _set_vm(self, dep_id: str, name: str, state: VmState, attempt: bool = False) -> None:
        bump = ", create_attempts = create_attempts + 1" if attempt else ""
        await self._exec(
            f"UPDATE vms SET state = %s, updated_at = now(){bump}"
            " WHERE deployment_id = %s AND name = %s",
            (state, dep_id, name),
        )

    async def _create_deployment(self, txid: str, dep_id: str) -> None:
        await self._start(txid)
        dep, vms = await self._vms(dep_id)
        if dep is None:
            await self._finish(txid, TxState.FAILED, 404, f"deployment {dep_id} vanished", {})
            return
        groups = {g["name"]: g for g in dep["vm_groups"]}
        for name, group, state in vms:
            if state == VmState.ACTIVE:
                continue
            g = groups[group]
            spec = VmSpec(group, g["image"], g["flavor"], tuple(g.get("networks", ())))
            if state == VmState.CREATING and await self._vim.vm_exists(dep_id, name):
                await self._set_vm(dep_id, name, VmState.ACTIVE)
                log.info("deployment %s: VM %s found created; not creating again", dep_id, name)
                continue
            error = await self._create_vm(dep_id, name, spec)
            if error is not None:
                await self._set_vm(dep_id, name, VmState.ERROR)
                dep = await self._snapshot(dep_id, DeploymentState.FAILED)
                await self._finish(
                    txid,
                    TxState.FAILED,
                    500,
                    f"VM {name}: {error}",
                    dep,
                    (
                        "UPDATE deployments SET state = %s, updated_at = now() WHERE id = %s",
                        (DeploymentState.FAILED, dep_id),
                    ),
                )
                return
            await self._set_vm(dep_id, name, VmState.ACTIVE)
        dep = await self._snapshot(dep_id, DeploymentState.DEPLOYED)
        await self._finish(
            txid,
            TxState.SUCCESS,
            200,
            f"deployment {dep['name']} deployed: {len(vms)} VM(s)",
            dep,
            (
                "UPDATE deployments SET state = %s, updated_at = now() WHERE id = %s",
                (DeploymentState.DEPLOYED, dep_id),
            ),
        )

    async def _create_vm(self, dep_id: str, name: str, spec: VmSpec) -> str | None:
        """Create one VM with retries; the error text if it could not be done."""
        last = ""
        for attempt in range(1, self._tuning.vim_attempts + 1):
            await self._set_vm(dep_id, name, VmState.CREATING, attempt=True)
            try:
                await self._vim.create_vm(dep_id, name, spec)
                return None
            except VimError as exc:
                last = str(exc)
                log.warning("deployment %s: VM %s attempt %d: %s", dep_id, name, attempt, exc)
                await asyncio.sleep(self._tuning.vim_retry_s * attempt)
        return last

    async def _snapshot(self, dep_id: str, state: DeploymentState) -> store.Json:
        async with self._pool.connection() as conn:
            dep = await store.get_deployment(conn, dep_id)
            await conn.rollback()
        return (dep or {"id": dep_id}) | {"state": str(state)}

    async def _delete_deployment(self, txid: str, dep_id: str) -> None:
        await self._start(txid)
        await self._exec(
            "UPDATE deployments SET state = %s, updated_at = now() WHERE id = %s",
            (DeploymentState.DELETING, dep_id),
        )
        dep, vms = await self._vms(dep_id)
        if dep is None:
            await self._finish(txid, TxState.SUCCESS, 200, "deployment already deleted", {})
            return
        for name, _group, state in vms:
            if state == VmState.DELETED:
                continue
            await self._set_vm(dep_id, name, VmState.DELETING)
            try:
                await self._vim.delete_vm(dep_id, name)
            except VimError as exc:
                await self._finish(txid, TxState.FAILED, 500, f"VM {name}: {exc}", dep)
                return
            await self._set_vm(dep_id, name, VmState.DELETED)
        snapshot = await self._snapshot(dep_id, DeploymentState.DELETED)
        await self._finish(
            txid,
            TxState.SUCCESS,
            200,
            f"deployment {dep['name']} deleted",
            snapshot,
            ("DELETE FROM deployments WHERE id = %s", (dep_id,)),
        )

    # --- callbacks --------------------------------------------------------------------------

    async def _dispatch_callbacks(self) -> None:
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "SELECT c.transaction_id, c.url, c.address, c.attempts, t.status_code, t.message,"
                " t.result FROM callbacks c JOIN transactions t ON t.id = c.transaction_id"
                " WHERE c.state = 'PENDING' AND c.next_attempt_at <= now()"
                " AND t.state IN ('SUCCESS', 'FAILED')"
                " ORDER BY c.next_attempt_at LIMIT 200"
            )
            rows = await cur.fetchall()
            await conn.rollback()
        for txid, url, address, attempts, code, message, result in rows:
            if txid in self._sending:
                continue
            task = asyncio.create_task(
                self._deliver(txid, url, address, attempts, code, message, result),
                name=f"cb:{txid}",
            )
            self._sending[txid] = task
            task.add_done_callback(functools.partial(self._sent, txid))

    async def _deliver(
        self,
        txid: str,
        url: str,
        address: str | None,
        attempts: int,
        code: int,
        message: str,
        result: Any,
    ) -> None:
        if self._http is None:  # lazily: building its TLS context costs ~20 ms of activation
            self._http = callback_client(self._tuning)
        headers = {
            "ESC-Status-Code": str(code),
            "ESC-Status-Message": header_safe(message),
            "ESC-Transaction-Id": txid,
        }
        try:
            # a row from before the check was stored unpinned: check (and pin) it now
            pinned = PinnedCallback(url, address) if address else await self._callbacks.pin(url)
        except CallbackRefused as exc:
            await self._exec(
                "UPDATE callbacks SET state = %s, last_error = %s WHERE transaction_id = %s",
                (CallbackState.GAVE_UP, str(exc)[:500], txid),
            )
            log.warning("callback of %s not delivered: %s", txid, exc)
            return
        error = await post_callback(self._http, pinned, headers, result)
        attempts += 1
        if not error:
            await self._exec(
                "UPDATE callbacks SET state = %s, attempts = %s, delivered_at = now(),"
                " last_error = '' WHERE transaction_id = %s",
                (CallbackState.DELIVERED, attempts, txid),
            )
            log.info("callback of %s delivered to %s (attempt %d)", txid, url, attempts)
            return
        give_up = attempts >= self._tuning.callback_max_attempts
        delay = callback_delay(attempts, self._tuning)
        await self._exec(
            "UPDATE callbacks SET state = %s, attempts = %s, last_error = %s,"
            " next_attempt_at = now() + make_interval(secs => %s) WHERE transaction_id = %s",
            (
                CallbackState.GAVE_UP if give_up else CallbackState.PENDING,
                attempts,
                error[:500],
                delay,
                txid,
            ),
        )
        log.warning(
            "callback of %s to %s failed (attempt %d%s): %s",
            txid,
            url,
            attempts,
            ", giving up" if give_up else f", next in {delay:.1f}s",
            error,
        )
        if not give_up:
            asyncio.get_running_loop().call_later(delay, self._wake_cb.set)
