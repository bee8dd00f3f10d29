"""API users: names, roles and scrypt password hashes in the ``users`` table (replicated).

The synchronous functions are for ``escadm user add|passwd|list``, which runs on the primary;
the service verifies with :func:`verify_password` (slow on purpose: call it off the event loop).
Hash format: ``scrypt$<n>$<r>$<p>$<salt b64>$<hash b64>``.

Roles: ``admin`` may do everything, ``read-only`` may only read (``auth.allowed``).

Cost: OWASP's current recommendation for scrypt, N=2^17, r=8, p=1 (128 MiB and ~0.4 s per
hash on the lab's CPUs). A hash stored at a lower cost (N=2^14 before) still verifies and is
replaced at the current cost on the user's next successful login (:func:`needs_rehash`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
from dataclasses import dataclass
from typing import Any, Literal, LiteralString, get_args

import psycopg

from esc.config.schema import no_control
from esc.errors import ConfigError, DbError
from esc.manager.db import migrate_sync

Role = Literal["read-only", "admin"]
ROLES: tuple[Role, ...] = get_args(Role)
DEFAULT_ROLE: Role = "admin"  # what ``escadm user add`` made before roles existed


@dataclass(frozen=True)
class ScryptCost:
    n: int
    r: int
    p: int

    def memory(self) -> int:
        """Bytes scrypt needs at this cost (128 * r * N, plus a little for p)."""
        return 128 * self.r * (self.n + self.p + 2)


SCRYPT_COST = ScryptCost(n=2**17, r=8, p=1)  # OWASP Password Storage Cheat Sheet
# hashlib refuses more than maxmem (default 32 MiB): room for the current cost, twice over
SCRYPT_MAXMEM = 2**28
_DKLEN = 32
_USER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@\-]{0,62}")


def check_user_name(name: str) -> str:
    if not _USER.fullmatch(name):
        raise ConfigError("user", "letters, digits, '_', '.', '@', '-' (max 63)")
    return name


def check_role(role: str) -> Role:
    for known in ROLES:
        if role == known:
            return known
    raise ConfigError("--role", f"{role!r} is not one of {', '.join(ROLES)}")


def check_password(password: str) -> str:
    if not 8 <= len(password) <= 1024:
        raise ConfigError("password", "8-1024 characters")
    try:
        no_control(password)
    except ValueError as exc:
        raise ConfigError("password", str(exc)) from None
    return password


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _format(cost: ScryptCost, salt: bytes, digest: bytes) -> str:
    return f"scrypt${cost.n}${cost.r}${cost.p}${_b64(salt)}${_b64(digest)}"


def hash_password(
    password: str, *, cost: ScryptCost = SCRYPT_COST, salt: bytes | None = None
) -> str:
    salt = os.urandom(16) if salt is None else salt
    digest = hashlib.scrypt(
        password.encode(),
        salt=salt,
        n=cost.n,
        r=cost.r,
        p=cost.p,
        dklen=_DKLEN,
        maxmem=SCRYPT_MAXMEM,
    )
    return _format(cost, salt, digest)


def dummy_hash(cost: ScryptCost = SCRYPT_COST) -> str:
    """A well-formed hash no password matches (random salt and digest): verifying against it
    costs the same scrypt work as a real user's hash at ``cost`` (unknown users, auth.py)."""
    return _format(cost, os.urandom(16), os.urandom(_DKLEN))


def hash_cost(stored: str) -> ScryptCost | None:
    """The cost a stored hash was made at; None if it is not a scrypt hash of ours."""
    parts = stored.split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        return None
    try:
        return ScryptCost(int(parts[1]), int(parts[2]), int(parts[3]))
    except ValueError:
        return None


def needs_rehash(stored: str, cost: ScryptCost = SCRYPT_COST) -> bool:
    """True when ``stored`` was made at a lower cost than ``cost`` in any parameter (a higher
    one is kept: never weaken a hash)."""
    have = hash_cost(stored)
    return have is None or have.n < cost.n or have.r < cost.r or have.p < cost.p


def verify_password(password: str, stored: str) -> bool:
    """Constant-time check of ``password`` against a stored hash; False for a malformed one."""
    try:
        scheme, n_s, r_s, p_s, salt_s, hash_s = stored.split("$")
        if scheme != "scrypt":
            return False
        n, r, p = int(n_s), int(r_s), int(p_s)
        salt, expected = base64.b64decode(salt_s), base64.b64decode(hash_s)
        digest = hashlib.scrypt(
            password.encode(), salt=salt, n=n, r=r, p=p, dklen=len(expected), maxmem=SCRYPT_MAXMEM
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(digest, expected)


def add_user(
    conn: psycopg.Connection[Any], name: str, password: str, role: str = DEFAULT_ROLE
) -> None:
    """Create a user with ``role``; ConfigError if the name is taken or the role unknown
    (before anything is written). Applies pending migrations first."""
    _store_password(
        conn,
        name,
        password,
        "INSERT INTO users (name, password_hash, role) VALUES (%(name)s, %(hash)s, %(role)s) "
        "ON CONFLICT (name) DO NOTHING",
        refused=f"{name!r} already exists",
        what=f"add user {name!r}",
        role=check_role(role),
    )


def set_password(conn: psycopg.Connection[Any], name: str, password: str) -> None:
    """Replace a user's password; ConfigError if there is no such user."""
    _store_password(
        conn,
        name,
        password,
        "UPDATE users SET password_hash = %(hash)s, updated_at = now() WHERE name = %(name)s",
        refused=f"no user {name!r}",
        what=f"set password of {name!r}",
    )


def set_role(conn: psycopg.Connection[Any], name: str, role: str) -> None:
    """Change a user's role; ConfigError (before anything is written) for a bad role or name,
    or if there is no such user. Applies pending migrations first."""
    check_user_name(name)
    checked = check_role(role)
    try:
        migrate_sync(conn)
        with conn.transaction():
            cur = conn.execute(
                "UPDATE users SET role = %s, updated_at = now() WHERE name = %s", (checked, name)
            )
            if cur.rowcount != 1:
                raise ConfigError("user", f"no user {name!r}")
    except psycopg.Error as exc:
        raise DbError(f"set role of {name!r}: {exc}") from exc


def _store_password(
    conn: psycopg.Connection[Any],
    name: str,
    password: str,
    sql: str,
    *,
    refused: str,
    what: str,
    role: Role | None = None,
) -> None:
    """Check the name and password, hash it, run ``sql`` (which must touch exactly one row, or
    ConfigError ``refused``) after pending migrations; database errors -> DbError."""
    check_user_name(name)
    hashed = hash_password(check_password(password))
    try:
        migrate_sync(conn)
        with conn.transaction():
            cur = conn.execute(sql, {"name": name, "hash": hashed, "role": role})
            if cur.rowcount != 1:
                raise ConfigError("user", refused)
    except psycopg.Error as exc:
        raise DbError(f"{what}: {exc}") from exc


def list_users(conn: psycopg.Connection[Any]) -> list[tuple[str, str]]:
    """(name, role) by name. Works on a standby too (read only); empty before the first user.
    A database not migrated to roles yet (the primary runs the migration): every user is
    ``admin``, what the migration makes of them."""
    try:
        with conn.transaction():
            row = conn.execute(
                "SELECT to_regclass('users') IS NOT NULL, EXISTS (SELECT 1 FROM "
                "information_schema.columns WHERE table_name = 'users' AND column_name = 'role' "
                "AND table_schema = current_schema())"
            ).fetchone()
            if row is None or not row[0]:
                return []
            if row[1]:
                query: LiteralString = "SELECT name, role FROM users ORDER BY name"
            else:
                query = "SELECT name, 'admin' FROM users ORDER BY name"
            return [(r[0], r[1]) for r in conn.execute(query)]
    except psycopg.Error as exc:
        raise DbError(f"list users: {exc}") from exc
