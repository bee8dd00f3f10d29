"""HTTP basic authentication against the ``users`` table.

scrypt is slow on purpose (tens of ms), too slow to run per request at hundreds of requests a
second, so a successful check is remembered for a few seconds, keyed by an HMAC of the
credentials under a per-process random key (the password itself is never kept). A password
change takes effect on the next check after that; failures are never cached.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import os
import time
from typing import Any, Protocol

from psycopg_pool import AsyncConnectionPool

from esc.manager.users import verify_password

CACHE_TTL_S = 5.0
_CACHE_MAX = 4096
_SCRYPT_PARALLEL = 4  # a flood of wrong passwords must not take every thread


def parse_basic(header: str | None) -> tuple[str, str] | None:
    """``Basic base64(user:password)`` → (user, password); None if absent or malformed."""
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "basic" or not token:
        return None
    try:
        text = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = text.partition(":")
    if not sep or not user:
        return None
    return user, password


class CredentialCheck(Protocol):
    """What the basic-auth layer needs: the API and the portal share it; tests pass a fake."""

    async def check(self, user: str, password: str) -> bool: ...


class Authenticator:
    def __init__(self, pool: AsyncConnectionPool[Any], ttl_s: float = CACHE_TTL_S) -> None:
        self._pool = pool
        self._ttl = ttl_s
        self._key = os.urandom(32)
        self._ok: dict[bytes, float] = {}  # credential HMAC -> monotonic expiry
        self._slots = asyncio.Semaphore(_SCRYPT_PARALLEL)

    def _mac(self, user: str, password: str) -> bytes:
        msg = user.encode() + b"\0" + password.encode()
        return hmac.new(self._key, msg, hashlib.sha256).digest()

    async def check(self, user: str, password: str) -> bool:
        """True if the credentials are valid. Database errors propagate (caller answers 503)."""
        mac = self._mac(user, password)
        now = time.monotonic()
        expiry = self._ok.get(mac)
        if expiry is not None and expiry > now:
            return True
        async with self._pool.connection() as conn:
            cur = await conn.execute("SELECT password_hash FROM users WHERE name = %s", (user,))
            row = await cur.fetchone()
            await conn.rollback()
        if row is None:
            return False
        async with self._slots:
            ok = await asyncio.to_thread(verify_password, password, row[0])
        if ok:
            if len(self._ok) >= _CACHE_MAX:
                self._ok.clear()
            self._ok[mac] = now + self._ttl
        return ok
