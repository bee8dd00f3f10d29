"""Cursors of the northbound API's lists (esc.manager.paging): round trips and refusals."""

from __future__ import annotations

import base64
import json
import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from esc.manager.paging import (
    MAX_CURSOR,
    CursorError,
    deployment_cursor,
    encode,
    next_link,
    read_deployment_cursor,
    read_tenant_cursor,
    read_transaction_cursor,
    tenant_cursor,
    transaction_cursor,
)

READERS: list[Callable[[str], Any]] = [
    read_tenant_cursor,
    read_deployment_cursor,
    read_transaction_cursor,
]
DEP_ID = uuid.UUID("6f1c1f43-5a5e-4c3e-9a57-0e7d3c1b2a90")
WHEN = datetime(2024, 5, 1, 10, 0, 0, 123456, tzinfo=UTC)


def b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def raw(value: Any) -> str:
    return b64(json.dumps(value, separators=(",", ":")))


def test_round_trips() -> None:
    for name in ("acme", "a", "Z.9_-x", "é-ü-名前", "x" * 63):
        assert read_tenant_cursor(tenant_cursor(name)) == name
    for when in (
        WHEN,
        WHEN.replace(microsecond=0),  # isoformat would drop the fraction; the cursor keeps it
        datetime(2024, 5, 1, 12, 0, 0, 1, tzinfo=timezone(timedelta(hours=2))),
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    ):
        got_when, got_id = read_deployment_cursor(deployment_cursor(when, DEP_ID))
        assert (got_when, got_id) == (when, DEP_ID)
        assert got_when.tzinfo is not None
    assert read_deployment_cursor(deployment_cursor(WHEN, str(DEP_ID))) == (WHEN, DEP_ID)
    for seq in (1, 2, 10_000, 2**63 - 1):
        assert read_transaction_cursor(transaction_cursor(seq)) == seq


def test_cursors_are_url_safe_and_opaque() -> None:
    for cursor in (
        tenant_cursor("é-ü-名前"),
        deployment_cursor(WHEN, DEP_ID),
        transaction_cursor(2**63 - 1),
    ):
        assert re.fullmatch(r"[A-Za-z0-9_-]+", cursor), cursor
        assert len(cursor) < MAX_CURSOR
        assert "acme" not in cursor
    # the longest tenant name the API takes, and 63 characters of four UTF-8 bytes each
    for name in ("a" * 63, "\U0001d49c" * 63):
        assert len(tenant_cursor(name)) <= MAX_CURSOR
        assert read_tenant_cursor(tenant_cursor(name)) == name


def test_a_cursor_of_another_list_is_refused() -> None:
    cursors = [tenant_cursor("acme"), deployment_cursor(WHEN, DEP_ID), transaction_cursor(7)]
    for i, reader in enumerate(READERS):
        for j, cursor in enumerate(cursors):
            if i == j:
                reader(cursor)
                continue
            with pytest.raises(CursorError, match=r"^after: a cursor of another list"):
                reader(cursor)


GOOD = tenant_cursor("acme")


@pytest.mark.parametrize(
    ("reader", "text"),
    [
        (read_tenant_cursor, ""),
        (read_tenant_cursor, "!!!"),
        (read_tenant_cursor, GOOD + "="),  # padding is not part of a cursor
        (read_tenant_cursor, GOOD + "%3D"),
        (read_tenant_cursor, GOOD[:-1]),  # truncated
        (read_tenant_cursor, GOOD[:-2] + "x" + GOOD[-1]),  # one character changed
        (read_tenant_cursor, "a"),  # not base64 at all (length 1 mod 4)
        (read_tenant_cursor, "x" * (MAX_CURSOR + 1)),
        (read_tenant_cursor, b64("not json")),
        (read_tenant_cursor, base64.urlsafe_b64encode(b'["tenants","\xff"]').decode().rstrip("=")),
        (read_tenant_cursor, raw({"tenants": "acme"})),
        (read_tenant_cursor, raw([])),
        (read_tenant_cursor, raw([1, "acme"])),
        (read_tenant_cursor, raw(["tenants"])),
        (read_tenant_cursor, raw(["tenants", 1])),
        (read_tenant_cursor, raw(["tenants", None])),
        (read_tenant_cursor, raw(["tenants", "a", "b"])),
        (read_tenant_cursor, raw(["tenants", "a\x00b"])),  # PostgreSQL text holds no NUL
        (read_tenant_cursor, b64('["tenants","\\ud800"]')),  # a lone surrogate is not UTF-8
        (read_tenant_cursor, b64('["tenants", "acme"]')),  # not as the API writes it
        (read_tenant_cursor, b64('["tenants","acm\\u0065"]')),
        (read_tenant_cursor, b64("[" * 5000 + "]" * 5000)),
        (read_transaction_cursor, raw(["transactions"])),
        (read_transaction_cursor, raw(["transactions", 0])),
        (read_transaction_cursor, raw(["transactions", -1])),
        (read_transaction_cursor, raw(["transactions", 2**63])),  # beyond bigint
        (read_transaction_cursor, raw(["transactions", 1.0])),
        (read_transaction_cursor, raw(["transactions", True])),
        (read_transaction_cursor, raw(["transactions", "5"])),
        (read_transaction_cursor, b64('["transactions",05]')),
        (read_transaction_cursor, b64('["transactions",NaN]')),
        (read_transaction_cursor, b64('["transactions",' + "9" * 5000 + "]")),
        (read_deployment_cursor, raw(["deployments", "2024-05-01T10:00:00.123456Z"])),
        (read_deployment_cursor, raw(["deployments", "2024-05-01T10:00:00Z", str(DEP_ID)])),
        (read_deployment_cursor, raw(["deployments", "2024-02-30T10:00:00.000000Z", str(DEP_ID)])),
        (read_deployment_cursor, raw(["deployments", "2024-05-01T10:00:00.1+00:00", str(DEP_ID)])),
        (read_deployment_cursor, raw(["deployments", "yesterday", str(DEP_ID)])),
        (read_deployment_cursor, raw(["deployments", 1714557600, str(DEP_ID)])),
        (read_deployment_cursor, raw(["deployments", "2024-05-01T10:00:00.123456Z", "x"])),
        (read_deployment_cursor, raw(["deployments", "2024-05-01T10:00:00.123456Z", None])),
        (
            read_deployment_cursor,
            raw(["deployments", "2024-05-01T10:00:00.123456Z", str(DEP_ID).upper()]),
        ),
        (read_deployment_cursor, raw(["deployments", "2024-05-01T10:00:00.123456Z", DEP_ID.hex])),
    ],
)
def test_malformed_cursors_are_refused_naming_after(
    reader: Callable[[str], Any], text: str
) -> None:
    with pytest.raises(CursorError, match=r"^after: "):
        reader(text)


def test_non_canonical_base64_is_refused() -> None:
    """Base64 whose unused trailing bits are set decodes to the same bytes, but is not a
    cursor the API handed out: exactly one text per position."""
    good = transaction_cursor(42)
    assert len(good) % 4 != 0
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(good[-1])
    twin = good[:-1] + alphabet[last + 1]
    assert base64.urlsafe_b64decode(twin + "=" * (-len(twin) % 4)) == base64.urlsafe_b64decode(
        good + "=" * (-len(good) % 4)
    )
    with pytest.raises(CursorError, match=r"^after: "):
        read_transaction_cursor(twin)


@given(st.text(max_size=600))
def test_any_text_is_a_cursor_or_a_cursor_error(text: str) -> None:
    for reader in READERS:
        try:
            reader(text)
        except CursorError as exc:
            assert str(exc).startswith("after: ")


@given(st.lists(st.one_of(st.text(max_size=40), st.integers(), st.none(), st.floats())))
def test_any_json_array_is_a_cursor_or_a_cursor_error(value: list[Any]) -> None:
    for kind in ("tenants", "deployments", "transactions"):
        text = raw([kind, *value])
        for reader in READERS:
            try:
                reader(text)
            except CursorError as exc:
                assert str(exc).startswith("after: ")


@given(
    st.text(min_size=1, max_size=63).filter(lambda s: "\x00" not in s),
    st.datetimes(timezones=st.just(UTC)),
    st.uuids(),
    st.integers(min_value=1, max_value=2**63 - 1),
)
def test_every_key_round_trips(name: str, when: datetime, dep_id: uuid.UUID, seq: int) -> None:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return
    assert read_tenant_cursor(tenant_cursor(name)) == name
    assert read_deployment_cursor(deployment_cursor(when, dep_id)) == (when, dep_id)
    assert read_transaction_cursor(transaction_cursor(seq)) == seq


def test_encode_is_compact_json() -> None:
    assert base64.urlsafe_b64decode(encode("transactions", 5) + "==") == b'["transactions",5]'


def test_next_link_keeps_filters_and_limit() -> None:
    cursor = deployment_cursor(WHEN, DEP_ID)
    link = next_link("/v0/deployments", [("tenant", "acme"), ("limit", 50)], cursor)
    assert link is not None
    parts = urlsplit(link)
    assert (parts.scheme, parts.netloc, parts.path) == ("", "", "/v0/deployments")
    assert parse_qsl(parts.query) == [("tenant", "acme"), ("limit", "50"), ("after", cursor)]
    assert next_link("/v0/deployments", [("tenant", None), ("limit", 7)], "abc") == (
        "/v0/deployments?limit=7&after=abc"
    )
    assert next_link("/v0/tenants", [("limit", 7)], None) is None
    assert next_link("/v0/x", [("q", "a b&c")], "z") == "/v0/x?q=a+b%26c&after=z"
