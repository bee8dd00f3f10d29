"""Request bodies and header values of the northbound API, validated, and the answers' shapes for
the OpenAPI document. No I/O in this module.

Every string that is stored or echoed refuses control characters: PostgreSQL rejects NUL in
text and jsonb, and a newline in a value that ends up in a callback header would split it.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from esc.config.schema import no_control

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,62}$"
TXID_PATTERN = r"^[A-Za-z0-9._:\-]{1,128}$"
_TXID = re.compile(TXID_PATTERN)
MAX_VMS_PER_GROUP = 50
MAX_VMS_PER_DEPLOYMENT = 200
MAX_CALLBACK_URL = 2048

Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
Text = Annotated[str, StringConstraints(max_length=1024), AfterValidator(no_control)]
Ref = Annotated[str, StringConstraints(min_length=1, max_length=255), AfterValidator(no_control)]


class TxState(StrEnum):
    """A transaction's state. Published values: never rename."""

    PENDING = "PENDING"  # accepted, not started
    RUNNING = "RUNNING"  # the worker is carrying it out (possibly on a previous primary)
    SUCCESS = "SUCCESS"
    FAILED = "FAILED"


class DeploymentState(StrEnum):
    DEPLOYING = "DEPLOYING"
    DEPLOYED = "DEPLOYED"
    FAILED = "FAILED"
    DELETING = "DELETING"
    DELETED = "DELETED"  # only in results and callbacks: the row is gone


class VmState(StrEnum):
    PENDING = "PENDING"
    CREATING = "CREATING"  # create_vm was called; on resume, ask the VIM before creating
    ACTIVE = "ACTIVE"
    ERROR = "ERROR"
    DELETING = "DELETING"
    DELETED = "DELETED"


class CallbackState(StrEnum):
    PENDING = "PENDING"
    DELIVERED = "DELIVERED"
    GAVE_UP = "GAVE_UP"


class _Body(BaseModel):
    """A request body: unknown keys refused, and strict types: JSON ``true`` is not the
    integer 1 nor ``"2"`` the integer 2 (422 naming the field, not a silent coercion)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class TenantCreate(_Body):
    name: Name
    description: Text = ""


class Kpi(_Body):
    """How the VM's liveness is measured (ESC's KPI section)."""

    type: Literal["ICMPPing", "TCPPing"] = "ICMPPing"
    poll_interval_s: int = Field(default=5, ge=1, le=3600)
    port: int | None = Field(default=None, ge=1, le=65535)

    @model_validator(mode="after")
    def _port(self) -> Kpi:
        if self.type == "TCPPing" and self.port is None:
            raise ValueError("port is required for a TCPPing KPI")
        return self


class Rule(_Body):
    """What to do on a KPI event (ESC's rules section): VM_ALIVE → recover autohealing."""

    event: Literal["VM_ALIVE"] = "VM_ALIVE"
    action: Literal["recover autohealing", "log", "servicebooted"]


class VmGroup(_Body):
    name: Name
    image: Ref
    flavor: Ref
    count: int = Field(default=1, ge=1, le=MAX_VMS_PER_GROUP)
    networks: list[Name] = Field(default_factory=list, max_length=8)
    kpi: Kpi | None = None
    rules: list[Rule] = Field(default_factory=list, max_length=8)


class DeploymentCreate(_Body):
    tenant: Name
    name: Name
    vm_groups: list[VmGroup] = Field(min_length=1, max_length=16)

    @model_validator(mode="after")
    def _groups(self) -> DeploymentCreate:
        seen: set[str] = set()
        for group in self.vm_groups:
            if group.name in seen:
                raise ValueError(f"vm_groups: duplicate group name {group.name!r}")
            seen.add(group.name)
        total = sum(g.count for g in self.vm_groups)
        if total > MAX_VMS_PER_DEPLOYMENT:
            raise ValueError(f"vm_groups: {total} VMs, at most {MAX_VMS_PER_DEPLOYMENT}")
        return self

    def vm_names(self) -> list[tuple[str, str]]:
        """(vm name, group) for every VM, in creation order: ``<deployment>_<group>_<n>``."""
        return [
            (f"{self.name}_{g.name}_{i}", g.name)
            for g in self.vm_groups
            for i in range(1, g.count + 1)
        ]


def check_transaction_id(value: str, header: str) -> str:
    """A client-supplied transaction id: 1-128 of ``[A-Za-z0-9._:-]``."""
    if not _TXID.fullmatch(value):
        raise ValueError(f"{header}: 1-128 characters of A-Z a-z 0-9 . _ : -")
    return value


def pick_transaction_id(esc_txid: str | None, idem_key: str | None) -> str | None:
    """The client's id from either header; both given must agree."""
    if esc_txid is not None:
        check_transaction_id(esc_txid, "ESC-Transaction-Id")
    if idem_key is not None:
        check_transaction_id(idem_key, "Idempotency-Key")
    if esc_txid is not None and idem_key is not None and esc_txid != idem_key:
        raise ValueError("ESC-Transaction-Id and Idempotency-Key differ; send one")
    return esc_txid if esc_txid is not None else idem_key


def check_callback_url(url: str) -> str:
    """A callback target: absolute http(s) URL with a host, no control characters or spaces."""
    if len(url) > MAX_CALLBACK_URL:
        raise ValueError(f"Callback: longer than {MAX_CALLBACK_URL} characters")
    if re.search(r"[\x00-\x20\x7f]", url):
        raise ValueError("Callback: must not contain spaces or control characters")
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises on a bad port
    except ValueError as exc:
        raise ValueError(f"Callback: not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError("Callback: scheme must be http or https")
    if not parts.hostname:
        raise ValueError("Callback: URL has no host")
    if parts.username is not None or parts.password is not None:
        raise ValueError("Callback: credentials in the URL are not accepted")
    return url


def first_difference(a: Any, b: Any, path: str = "") -> str | None:
    """The dotted path of the first place two JSON values differ, or None if equal.

    Used to name the field when a transaction id is reused for a different request.
    """
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            sub = f"{path}.{key}" if path else str(key)
            if key not in a or key not in b:
                return sub
            found = first_difference(a[key], b[key], sub)
            if found is not None:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list):
        for i, (x, y) in enumerate(zip(a, b, strict=False)):
            found = first_difference(x, y, f"{path}.{i}" if path else str(i))
            if found is not None:
                return found
        if len(a) != len(b):
            return path or "body"
        return None
    if a != b or type(a) is not type(b):
        return path or "body"
    return None


def header_safe(text: str, limit: int = 200) -> str:
    """Make a message fit for an HTTP header value: no control characters, bounded length."""
    clean = re.sub(r"[\x00-\x1f\x7f]+", " ", text).strip()
    clean = clean.encode("latin-1", "replace").decode("latin-1")
    return clean[:limit]


# --- answers, for the OpenAPI document ------------------------------------------------------
# The API sends what store.py builds and does not re-validate it against these; the integration
# tests check that real answers validate (extra="forbid": a new key must be documented here).


class _Answer(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Tenant(_Answer):
    name: str
    description: str
    created_at: datetime


class Vm(_Answer):
    name: str
    vm_group: str
    state: VmState


class Deployment(_Answer):
    id: uuid.UUID
    tenant: str
    name: str
    state: DeploymentState
    vm_groups: list[VmGroup]
    vms: list[Vm]
    created_at: datetime
    updated_at: datetime


class CallbackStatus(_Answer):
    url: str
    state: CallbackState
    attempts: int


class Transaction(_Answer):
    id: str
    operation: str
    resource_type: str
    resource_id: str
    state: TxState
    status_code: int | None
    message: str
    created_at: datetime
    updated_at: datetime
    resource: dict[str, Any] | None
    callback: CallbackStatus | None


NEXT_DOC = (
    "Relative URL of the next page (the same filters and limit, and `after`); "
    "null on the last page."
)
AFTER_DOC = (
    "Cursor from the `next` link of the previous page: the page starts after the row it "
    "names. Opaque; a cursor not handed out by this list is refused with 422."
)


class TenantPage(_Answer):
    """Tenants by name."""

    tenants: list[Tenant]
    next: str | None = Field(description=NEXT_DOC)


class DeploymentPage(_Answer):
    """Deployments by (created_at, id), oldest first."""

    deployments: list[Deployment]
    next: str | None = Field(description=NEXT_DOC)


class TransactionPage(_Answer):
    """Transactions newest first (by acceptance order)."""

    transactions: list[Transaction]
    next: str | None = Field(description=NEXT_DOC)


# --- error answers, for the OpenAPI document ------------------------------------------------
# Not extra="forbid": the layers in front of the routes may add keys of their own.


class ErrorAnswer(BaseModel):
    """A refused request: what is wrong, and the field when one thing is."""

    detail: str
    field: str | None = None


class FieldError(BaseModel):
    field: str
    message: str


class ValidationErrorAnswer(BaseModel):
    """422: ``field`` names the first thing wrong; ``errors`` lists every one found by the
    request's validation (absent when a later check refused one field)."""

    detail: str
    field: str | None
    errors: list[FieldError] | None = None


class UnavailableAnswer(BaseModel):
    """503: this node is not the primary (``primary``/``primary_url`` name where to go; null
    while that is not known), or the database is unavailable; retry after ``Retry-After``."""

    detail: str
    primary: str | None = None
    primary_url: str | None = None
