"""API users: names and scrypt password hashes in the ``users`` table (replicated).

The synchronous functions are for ``escadm user add|passwd|list``, which runs on the primary;
the service verifies with :func:`verify_password` (slow on purpose: call it off the event loop).
Hash format: ``scrypt$<n>$<r>$<p>$<salt b64>$<hash b64>``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
from typing import Any

import psycopg

from esc.config.schema import no_control
from esc.errors import ConfigError, DbError
from esc.manager.db import migrate_sync

SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
_DKLEN = 32
_USER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@\-]{0,62}")


def check_user_name(name: str) -> str:
    if not _USER.fullmatch(name):
        raise ConfigError("user", "letters, digits, '_', '.', '@', '-' (max 63)")
    return name


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


def hash_password(password: str, *, n: int = SCRYPT_N, salt: bytes | None = None) -> str:
    salt = os.urandom(16) if salt is None else salt
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=SCRYPT_R, p=SCRYPT_P, dklen=_DKLEN)
    return f"scrypt${n}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    """Constant-time check of ``password`` against a stored hash; False for a malformed one."""
    try:
        scheme, n_s, r_s, p_s, salt_s, hash_s = stored.split("$")
        if scheme != "scrypt":
            return False
        n, r, p = int(n_s), int(r_s), int(p_s)
        salt, expected = base64.b64decode(salt_s), base64.b64decode(hash_s)
        digest = hashlib.scrypt(
            password.encode(), salt=salt, n=n, r=r, p=p, dklen=len(expected), maxmem=2**27
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(digest, expected)


def add_user(conn: psycopg.Connection[Any], name: str, password: str) -> None:
    """Create a user; ConfigError if the name is taken. Applies pending migrations first."""
    _store_password(
        conn,
        name,
        password,
        "INSERT INTO users (name, password_hash) VALUES (%(name)s, %(hash)s) "
        "ON CONFLICT (name) DO NOTHING",
        refused=f"{name!r} already exists",
        what=f"add user {name!r}",
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


def _store_password(
    conn: psycopg.Connection[Any], name: str, password: str, sql: str, *, refused: str, what: str
) -> None:
    """Check the name and password, hash it, run ``sql`` (which must touch exactly one row, or
    ConfigError ``refused``) after pending migrations; database errors -> DbError."""
    check_user_name(name)
    hashed = hash_password(check_password(password))
    try:
        migrate_sync(conn)
        with conn.transaction():
            cur = conn.execute(sql, {"name": name, "hash": hashed})
            if cur.rowcount != 1:
                raise ConfigError("user", refused)
    except psycopg.Error as exc:
        raise DbError(f"{what}: {exc}") from exc


def list_users(conn: psycopg.Connection[Any]) -> list[str]:
    """User names, sorted. Works on a standby too (read only); empty before the first user."""
    try:
        with conn.transaction():
            row = conn.execute("SELECT to_regclass('users') IS NOT NULL").fetchone()
            if row is None or not row[0]:
                return []
            return [r[0] for r in conn.execute("SELECT name FROM users ORDER BY name")]
    except psycopg.Error as exc:
        raise DbError(f"list users: {exc}") from exc
