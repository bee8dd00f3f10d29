"""HTTP basic authentication against the ``users`` table, and the roles' authorisation.

**Cache.** scrypt is slow on purpose (~0.4 s at OWASP's cost), far too slow to run per request
at hundreds of requests a second, so a successful check is remembered for a few seconds, keyed
by an HMAC of the credentials under a per-process random key (the password itself is never
kept). A password or role change takes effect on the next check after that; failures are
never cached.

**No user enumeration by timing.** An unknown user name is verified against a dummy hash at
the current cost (:func:`users.dummy_hash`): the same scrypt work as a known user's wrong
password, so "no such user" and "wrong password" take the same time and give the same 401 (a
name that cannot be a user's is not even looked up, but pays the scrypt too). The cache does
not undo that: only *successful* credentials are cached, so a fast answer only ever goes to a
client that sent a valid name *and* its password (which the 200 tells it anyway); an unknown
name can never be in the cache, and neither can a known name with a wrong password: both
always pay one scrypt. And the cache is consulted only after the backoff: a backed-off client
guessing the password a real user has just logged in with gets the same 429 as for any other
guess, not a cached 200. What still differs a little: the database lookup (a primary-key
probe, microseconds either way), and a known user whose hash predates the current cost (N=2^14
before) costs less until their next successful login rehashes it (that login pays a second
scrypt, once). The throttle does not depend on whether a name exists (failures count alike).

**Throttling** (the backoff rule is in :mod:`esc.manager.throttle`). On top of it:

* at most ``SCRYPT_SLOTS`` scrypt runs at a time (each takes 128 MiB and a core), so a flood
  cannot take every thread or the memory;
* a client that has failed recently does not queue for a slot: if none is free it gets 429
  (Retry-After 1) at once, without running scrypt, so wrong passwords cannot starve a real
  login behind them;
* a client runs at most ``CLIENT_INFLIGHT`` verifications at a time; more get 429 at once
  (64 concurrent wrong passwords from one address cost at most that many scrypt runs);
* concurrent requests with the *same* credentials share one verification (a client opening
  with 20 parallel requests runs one scrypt, not 20, and is not refused).

**Tickets** (:mod:`esc.manager.tickets`): a successful check is also remembered in the
database, for the node that takes over after a failover; a ticket found lets the request in
without scrypt, after the same backoff and the same user lookup.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from esc.errors import ConfigError
from esc.manager.throttle import LoginThrottle, client_key
from esc.manager.tickets import TICKET_TTL_S, TicketStore, ticket
from esc.manager.users import (
    SCRYPT_COST,
    Role,
    ScryptCost,
    check_role,
    check_user_name,
    dummy_hash,
    hash_password,
    needs_rehash,
    verify_password,
)

log = logging.getLogger(__name__)

CACHE_TTL_S = 5.0
_CACHE_MAX = 4096
SCRYPT_SLOTS = 4
CLIENT_INFLIGHT = 2
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def allowed(role: Role, method: str) -> bool:
    """Authorisation: ``admin`` may do anything, ``read-only`` only read (GET, HEAD,
    OPTIONS)."""
    return role == "admin" or method.upper() in READ_METHODS


def _has_control(text: str) -> bool:
    return any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in text)


def parse_basic(header: str | None) -> tuple[str, str] | None:
    """``Basic base64(user:password)`` → (user, password); None if absent or malformed
    (including a user name with a control character: a plain 401, never a database query)."""
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "basic" or not token:
        return None
    try:
        text = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except ValueError:  # not base64 (binascii.Error), not ASCII in it, not UTF-8 in it
        return None
    user, sep, password = text.partition(":")
    if not sep or not user or _has_control(user):
        return None
    return user, password


def _error(description: str, **extra: Any) -> dict[str, Any]:
    props: dict[str, Any] = {"detail": {"type": "string"}}
    props.update({k: {"type": "string", "enum": v} for k, v in extra.items()})
    body = {"type": "object", "properties": props, "required": ["detail", *extra]}
    return {"description": description, "content": {"application/json": {"schema": body}}}


# What api.BasicAuth answers, on every route (the 403 on writes only), for the OpenAPI document
AUTH_RESPONSES: dict[str, dict[str, Any]] = {
    "401": {
        **_error("No credentials, or wrong ones."),
        "headers": {
            "WWW-Authenticate": {
                "description": "Basic realm.",
                "schema": {"type": "string"},
                "required": True,
            }
        },
    },
    "429": {
        **_error(
            "Too many failed logins from this client (or for this user, from a client that "
            "failed too): the password was not checked. Retry after Retry-After seconds."
        ),
        "headers": {
            "Retry-After": {"description": "Seconds to wait.", "schema": {"type": "integer"}}
        },
    },
}
WRITE_RESPONSES: dict[str, dict[str, Any]] = {
    "403": _error("The user's role may only read.", role=["read-only"]),
}


def document_auth(schema: dict[str, Any]) -> None:
    """Add :data:`AUTH_RESPONSES` to every operation and :data:`WRITE_RESPONSES` to writes."""
    for ops in schema.get("paths", {}).values():
        for method, op in ops.items():
            responses = op.setdefault("responses", {})
            extra = AUTH_RESPONSES
            if not allowed("read-only", method):
                extra = {**AUTH_RESPONSES, **WRITE_RESPONSES}
            for code, doc in extra.items():
                responses.setdefault(code, doc)


@dataclass(frozen=True)
class Verdict:
    """A check's answer: the user's role (None: refused, 401) or, throttled, the seconds to
    wait (429 with Retry-After)."""

    role: Role | None = None
    retry_after: int = 0


REFUSED = Verdict()


class CredentialCheck(Protocol):
    """What the basic-auth layer needs: the API and the portal share it; tests pass a fake."""

    async def check(self, user: str, password: str, client: str | None = None) -> Verdict: ...


class UserStore(Protocol):
    """The ``users`` table as the authenticator needs it (:class:`PgUsers`; tests: a dict)."""

    async def lookup(self, name: str) -> tuple[str, str] | None:
        """(password hash, role) of ``name``, None if there is no such user."""
        ...

    async def replace_hash(self, name: str, old: str, new: str) -> None:
        """Store ``new`` for ``name`` if its hash is still ``old`` (a concurrent passwd wins)."""
        ...


class PgUsers:
    def __init__(self, pool: AsyncConnectionPool[Any]) -> None:
        self._pool = pool

    async def lookup(self, name: str) -> tuple[str, str] | None:
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "SELECT password_hash, role FROM users WHERE name = %s", (name,)
            )
            row = await cur.fetchone()
            await conn.rollback()
        return None if row is None else (row[0], row[1])

    async def replace_hash(self, name: str, old: str, new: str) -> None:
        async with self._pool.connection() as conn, conn.transaction():
            await conn.execute(
                "UPDATE users SET password_hash = %s, updated_at = now() "
                "WHERE name = %s AND password_hash = %s",
                (new, name, old),
            )


_NOT_A_NAME = "\0"  # what the throttle counts a name that cannot be a user's by (any length)


def _throttle_name(name: str) -> str:
    """``name`` if it can be a user's (at most 63 characters), else one shared key: the
    throttle's memory must not grow with the names clients send."""
    try:
        return check_user_name(name)
    except ConfigError:
        return _NOT_A_NAME


class Authenticator:
    def __init__(
        self,
        users: UserStore,
        ttl_s: float = CACHE_TTL_S,
        *,
        cost: ScryptCost = SCRYPT_COST,
        clock: Callable[[], float] = time.monotonic,
        verify: Callable[[str, str], bool] = verify_password,
        slots: int = SCRYPT_SLOTS,
        client_inflight: int = CLIENT_INFLIGHT,
        tickets: TicketStore | None = None,
        ticket_key: bytes | None = None,
        ticket_ttl_s: float = TICKET_TTL_S,
    ) -> None:
        self._users = users
        # both or neither: a ticket needs the pair's key (tickets.py)
        self._tickets = tickets if ticket_key is not None else None
        self._ticket_key = ticket_key or b""
        self._ticket_ttl = ticket_ttl_s
        self._ttl = ttl_s
        self._cost = cost
        self._clock = clock
        self._verify = verify
        self._dummy = dummy_hash(cost)
        self._key = os.urandom(32)
        self._ok: dict[bytes, tuple[float, Role]] = {}  # credential HMAC -> (expiry, role)
        self._slots = asyncio.Semaphore(slots)
        self._client_inflight = client_inflight
        self._inflight: Counter[str] = Counter()
        self._flights: dict[bytes, asyncio.Future[Verdict]] = {}
        self.throttle = LoginThrottle(clock)

    def _mac(self, user: str, password: str) -> bytes:
        msg = user.encode() + b"\0" + password.encode()
        return hmac.new(self._key, msg, hashlib.sha256).digest()

    async def check(self, user: str, password: str, client: str | None = None) -> Verdict:
        """The verdict on these credentials from ``client`` (its address). Database errors
        propagate (the caller answers 503)."""
        # the backoff first, even before the cache: else a backed-off client guessing the
        # password a real user just logged in with would learn it is right (200, not 429)
        who = client_key(client)
        name = _throttle_name(user)
        wait = self.throttle.retry_after(who, name)
        if wait:
            return Verdict(retry_after=wait)
        mac = self._mac(user, password)
        hit = self._ok.get(mac)
        if hit is not None and hit[0] > self._clock():
            return Verdict(hit[1])
        while (shared := self._flights.get(mac)) is not None:
            try:
                return await asyncio.shield(shared)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if not shared.cancelled() or (task is not None and task.cancelling()):
                    raise
                # the request that ran it went away: run our own
        if self._inflight[who] >= self._client_inflight:
            return Verdict(retry_after=1)
        flight: asyncio.Future[Verdict] = asyncio.get_running_loop().create_future()
        self._flights[mac] = flight
        self._inflight[who] += 1
        try:
            verdict = await self._check(user, name, password, who)
        except BaseException:
            flight.cancel()
            raise
        else:
            flight.set_result(verdict)
        finally:
            del self._flights[mac]
            self._inflight[who] -= 1
            if self._inflight[who] <= 0:
                del self._inflight[who]
        if verdict.role is not None:
            if len(self._ok) >= _CACHE_MAX:
                self._ok.clear()
            self._ok[mac] = (self._clock() + self._ttl, verdict.role)
        return verdict

    async def _check(self, user: str, name: str, password: str, who: str) -> Verdict:
        found = None if name == _NOT_A_NAME else await self._users.lookup(user)
        stored = self._dummy if found is None else found[0]
        mac = b""
        if found is not None and self._tickets is not None:
            mac = ticket(self._ticket_key, user, stored, password)
            left = await self._tickets.left(mac)
            if left is not None:
                if left < self._ticket_ttl / 2:
                    await self._put_ticket(mac)
                return self._succeeded(user, found[1], who, name)
        if self._slots.locked() and self.throttle.suspect(who):
            return Verdict(retry_after=1)  # no queueing behind the others for a failing client
        async with self._slots:
            ok = await asyncio.to_thread(self._verify, password, stored)
        if found is None or not ok:
            self.throttle.failed(who, name)
            wait = self.throttle.retry_after(who, name)
            if wait:  # once per backoff: the client's next tries are refused unchecked
                log.info("auth: client %s backed off %d s after failed logins", who, wait)
            return REFUSED
        verdict = self._succeeded(user, found[1], who, name)
        if verdict.role is None:
            return verdict
        if needs_rehash(stored, self._cost):
            stored = await self._rehash(user, password, stored)
            mac = b"" if self._tickets is None else ticket(self._ticket_key, user, stored, password)
        if mac:
            await self._put_ticket(mac)
        return verdict

    def _succeeded(self, user: str, role: str, who: str, name: str) -> Verdict:
        self.throttle.succeeded(who, name)
        try:
            return Verdict(check_role(role))
        except ConfigError:
            log.warning("auth: user %r has an unknown role %r: refused", user, role)
            return REFUSED

    async def _put_ticket(self, mac: bytes) -> None:
        """Write or renew a ticket; a failure is logged (the login stands: the next check of
        these credentials on the other node pays scrypt, that is all)."""
        assert self._tickets is not None
        try:
            await self._tickets.put(mac, self._ticket_ttl)
        except (psycopg.Error, PoolTimeout) as exc:
            log.warning("auth: login ticket not written: %s", exc)

    async def _rehash(self, user: str, password: str, stored: str) -> str:
        """Store the password at the current cost (it just verified at a lower one); the
        stored hash after it. A failure is logged and the login still succeeds: the next one
        tries again."""
        async with self._slots:
            new = await asyncio.to_thread(hash_password, password, cost=self._cost)
        try:
            await self._users.replace_hash(user, stored, new)
        except (psycopg.Error, PoolTimeout) as exc:
            log.warning("auth: could not rehash the password of %r: %s", user, exc)
            return stored
        log.info("auth: password of %r rehashed at scrypt N=%d", user, self._cost.n)
        return new
