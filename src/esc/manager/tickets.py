"""Login tickets: a successful password check remembered in the replicated database, so the
node that takes over does not make every client pay scrypt again.

scrypt at OWASP's cost takes about 0.4 s a check. The authenticator's memory cache hides that
on one node, but after a failover the new primary's cache is empty: every client's first
request would wait 0.4 s more, on top of the failover itself. So a successful check also
writes a ticket, ``HMAC-SHA256(key, name NUL stored-hash NUL password)``, with an expiry, to
``login_tickets`` (streamed to the standby like every write). A request whose credentials'
ticket is there and not expired is let in without scrypt, on either node.

* The key is the pair's (:func:`derive_key` of ``agent.peer_secret``, the same on both
  nodes): root's agent writes it to ``<run>/manager/login.key`` (0600, the manager's user's)
  and the manager, which never sees the secret itself, reads it. Without a key (a node
  without the pair, tests), no ticket is read or written.
* A ticket is useless without the key: a copy of the database alone gives nothing to guess
  passwords against offline faster than the scrypt hashes do.
* It is bound to the user's stored hash: a new password (or a rehash) voids every ticket of
  the old one. The role is read from ``users`` at each check, never from the ticket, and a
  deleted user's tickets find no user.
* Only a right password can have a ticket, so a fast answer goes only to a client that sent a
  valid name and its password (as the memory cache, ``auth.py``); a wrong one pays the
  ticket's lookup (an index probe) and then scrypt, as before.
* Expiry: :data:`TICKET_TTL_S` after the check; renewed on use when less than half is left
  (at most one write per ticket per half-life). Expired rows are deleted when a ticket is
  written. The write does not wait for the synchronous standby (``synchronous_commit =
  local``): a ticket lost in a failover costs one scrypt, never a login.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from pathlib import Path
from typing import Any, Protocol

from psycopg_pool import AsyncConnectionPool

from esc.errors import ConfigError

log = logging.getLogger(__name__)

TICKET_TTL_S = 900.0
KEY_FILE = "login.key"
_CONTEXT = b"esc-manager login tickets v1"


def derive_key(peer_secret: str) -> bytes:
    """The pair's ticket key: the same on both nodes, and not the secret itself."""
    return hmac.new(peer_secret.encode(), _CONTEXT, hashlib.sha256).digest()


def ticket(key: bytes, name: str, stored: str, password: str) -> bytes:
    msg = b"\0".join((name.encode(), stored.encode(), password.encode()))
    return hmac.new(key, msg, hashlib.sha256).digest()


def load_key(path: Path) -> bytes | None:
    """The key in ``path`` (64 hex digits), None if there is no file. Anything else is a
    ConfigError naming the file (the agent writes it: a bad one is not the operator's)."""
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
        raise ConfigError(str(path), "not a login-ticket key (64 lowercase hex digits)")
    return bytes.fromhex(text)


class TicketStore(Protocol):
    """``login_tickets`` as the authenticator needs it (:class:`PgTickets`; tests: a dict)."""

    async def left(self, mac: bytes) -> float | None:
        """Seconds until ``mac``'s ticket expires; None if there is none (or it expired)."""
        ...

    async def put(self, mac: bytes, ttl_s: float) -> None:
        """Write (or renew) ``mac``'s ticket for ``ttl_s`` seconds."""
        ...


class PgTickets:
    def __init__(self, pool: AsyncConnectionPool[Any]) -> None:
        self._pool = pool

    async def left(self, mac: bytes) -> float | None:
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "SELECT extract(epoch FROM expires_at - now())::float8 FROM login_tickets "
                "WHERE mac = %s AND expires_at > now()",
                (mac,),
            )
            row = await cur.fetchone()
            await conn.rollback()
        return None if row is None else float(row[0])

    async def put(self, mac: bytes, ttl_s: float) -> None:
        async with self._pool.connection() as conn, conn.transaction():
            await conn.execute("SET LOCAL synchronous_commit = local")
            await conn.execute(
                "INSERT INTO login_tickets (mac, expires_at) "
                "VALUES (%s, now() + make_interval(secs => %s)) "
                "ON CONFLICT (mac) DO UPDATE SET expires_at = EXCLUDED.expires_at",
                (mac, ttl_s),
            )
            await conn.execute("DELETE FROM login_tickets WHERE expires_at <= now()")
