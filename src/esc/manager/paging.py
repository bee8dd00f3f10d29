"""Cursor pagination of the northbound API's lists. Pure: no I/O.

Every list is ordered by a unique key, and a page is "the first ``limit`` rows after the key of
the last row the client saw" (keyset pagination). Rows inserted or deleted between two page
reads therefore never shift the walk: no row is returned twice, and no row that existed for the
whole walk is skipped. A row inserted meanwhile appears once if its key lies ahead of the
cursor, and not at all if it lies behind it.

    list                 order (unique)                   key in the cursor
    /v0/tenants          name                             ["tenants", name]
    /v0/deployments      (created_at, id)                 ["deployments", created_at, id]
    /v0/transactions     seq, descending (newest first)   ["transactions", seq]

A cursor is the urlsafe base64 (no padding) of that compact JSON array in UTF-8. It is opaque to
clients: the API only accepts what :func:`encode` could have produced (decoding and encoding
again must give back the same text), so anything else, a cursor of another list included, is
refused with :class:`CursorError` naming ``after``.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

MAX_CURSOR = 512  # characters of ``after``: a tenant name of 63 characters of any script fits
_ALPHABET = re.compile(r"^[A-Za-z0-9_-]+$")
_TS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")
_BIGINT_MAX = 2**63 - 1

Scalar = str | int


class CursorError(ValueError):
    """``after`` is not a cursor this list handed out; the message starts with ``after:``."""


def encode(kind: str, *key: Scalar) -> str:
    """The cursor of the row whose sort key is ``key`` in the list ``kind``."""
    text = json.dumps([kind, *key], separators=(",", ":"), ensure_ascii=False)
    return base64.urlsafe_b64encode(text.encode("utf-8")).decode("ascii").rstrip("=")


def decode(kind: str, text: str) -> list[Any]:
    """The key values of a cursor of the list ``kind``, still to be type-checked by the caller.
    CursorError unless ``text`` is exactly what :func:`encode` makes for that list."""
    if not text:
        raise CursorError("after: empty; omit it for the first page")
    if len(text) > MAX_CURSOR:
        raise CursorError(f"after: longer than {MAX_CURSOR} characters; not a cursor")
    if not _ALPHABET.fullmatch(text):
        raise CursorError("after: not a cursor (not urlsafe base64); use the 'next' link as is")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        value = json.loads(raw.decode("utf-8"))
    except (binascii.Error, UnicodeDecodeError, ValueError, RecursionError):
        raise CursorError("after: not a cursor; use the 'next' link as is") from None
    if not isinstance(value, list) or not value or not isinstance(value[0], str):
        raise CursorError("after: not a cursor; use the 'next' link as is")
    if value[0] != kind:
        raise CursorError(f"after: a cursor of another list, not of /v0/{kind}")
    return value[1:]


def _canonical(kind: str, text: str, *key: Scalar) -> None:
    if encode(kind, *key) != text:
        raise CursorError(f"after: not a cursor of /v0/{kind}; use the 'next' link as is")


def _text(value: Any) -> str:
    """A key string PostgreSQL can compare: no NUL, valid UTF-8 (no lone surrogates)."""
    if not isinstance(value, str) or "\x00" in value:
        raise CursorError("after: not a cursor; use the 'next' link as is")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise CursorError("after: not a cursor; use the 'next' link as is") from None
    return value


def _bad(kind: str) -> CursorError:
    return CursorError(f"after: not a cursor of /v0/{kind}; use the 'next' link as is")


# --- tenants: ordered by name ---------------------------------------------------------------


def tenant_cursor(name: str) -> str:
    return encode("tenants", name)


def read_tenant_cursor(text: str) -> str:
    """The tenant name after which the page starts."""
    key = decode("tenants", text)
    if len(key) != 1:
        raise _bad("tenants")
    name = _text(key[0])
    _canonical("tenants", text, name)
    return name


# --- deployments: ordered by (created_at, id) -------------------------------------------------


def _ts(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def deployment_cursor(created_at: datetime, dep_id: uuid.UUID | str) -> str:
    return encode("deployments", _ts(created_at), str(uuid.UUID(str(dep_id))))


def read_deployment_cursor(text: str) -> tuple[datetime, uuid.UUID]:
    """The (created_at, id) after which the page starts."""
    key = decode("deployments", text)
    if len(key) != 2:
        raise _bad("deployments")
    stamp, ident = _text(key[0]), _text(key[1])
    if not _TS.fullmatch(stamp):
        raise _bad("deployments")
    try:
        when = datetime.fromisoformat(stamp)
        dep_id = uuid.UUID(ident)
    except ValueError:
        raise _bad("deployments") from None
    _canonical("deployments", text, _ts(when), str(dep_id))
    return when, dep_id


# --- transactions: ordered by seq, newest first ---------------------------------------------


def transaction_cursor(seq: int) -> str:
    return encode("transactions", seq)


def read_transaction_cursor(text: str) -> int:
    """The seq below which the page starts (the list runs newest first)."""
    key = decode("transactions", text)
    if len(key) != 1:
        raise _bad("transactions")
    seq = key[0]
    if type(seq) is not int or not 1 <= seq <= _BIGINT_MAX:
        raise _bad("transactions")
    _canonical("transactions", text, seq)
    return seq


# --- the next link --------------------------------------------------------------------------


def next_link(
    path: str, params: Sequence[tuple[str, Scalar | None]], after: str | None
) -> str | None:
    """The relative URL of the next page: ``path`` with the same filters and limit (``params``
    in order, None values left out) and ``after``; None when there is no next page."""
    if after is None:
        return None
    query = [(k, str(v)) for k, v in params if v is not None]
    return f"{path}?{urlencode([*query, ('after', after)])}"
