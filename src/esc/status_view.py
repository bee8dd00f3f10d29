"""The agent's status on the wire: what ``GET /status`` on its local socket answers, and how
escadm and the portal read it. One definition for both ends (:class:`StatusView`;
``status_json`` writes it, ``parse_status`` reads it), as ``esc.wire`` is for the peer view.

Versioned like the peer view: ``version`` is the format; a status of a newer version than
this reader knows is refused (escadm and the portal then say so, naming the field), fields
added within a version have defaults (an older agent does not send them), unknown keys are
ignored. The JSON also carries what is derived from the fields (``role``, ``degraded``,
``db.lsn_text``) for the operators' scripts that read ``escadm status --json``; the reader
derives them again rather than trusting them.

The reader is typed at the boundary: every field is read by the type the dataclass declares
(bool is never an int, a float is finite or infinite but never NaN, an enum is one of its
values) and anything else raises :class:`DriverError` naming the field, e.g.
``status: peer.timeline: 'x' is not an integer``.
"""

from __future__ import annotations

import math
import types
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from enum import Enum
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

from esc.drivers.base import BgpStatus
from esc.errors import DriverError
from esc.model import (
    DbRole,
    DbStatus,
    NodeState,
    PeerView,
    QuorumObs,
    ServiceView,
    fmt_lsn,
)

STATUS_VERSION = 1

T = TypeVar("T")


@dataclass(frozen=True)
class Transition:
    """One entry of the agent's history (``GET /history`` answers a list of these)."""

    time: float  # epoch seconds
    from_state: str = field(metadata={"key": "from"})
    to_state: str = field(metadata={"key": "to"})
    reason: str = ""


@dataclass(frozen=True)
class Progress:
    """A long action under way (a clone or a rewind): how far it is."""

    operation: str  # "cloning from esc-ha-0"
    done: int  # bytes
    total: int  # bytes; 0: not known
    time: float = 0.0  # epoch seconds of the last report


@dataclass(frozen=True)
class Endpoints:
    """This node's monitoring URLs (``esc.agent.monitor_http``); None: that listener is off."""

    primary: str | None = None
    replica: str | None = None
    health: str | None = None
    liveness: str | None = None
    readiness: str | None = None
    metrics: str | None = None  # the agent's


@dataclass(frozen=True)
class StatusView:
    """Required: what every agent's status has carried. The rest has a default, for the
    status of an agent older than the field (a package upgraded before the agent restarted:
    its escadm reads the running older agent)."""

    node: str
    peer_name: str
    state: NodeState
    reason: str
    db: DbStatus
    service: ServiceView
    peer: PeerView
    since: float = 0.0  # epoch seconds of the last transition (or of the agent's start)
    rule: str = ""  # the rule that decided (core/rules.py)
    vrrp: str = ""  # keepalived's own state
    vip: str | None = None
    ha_mode: str | None = None
    vip_held: bool = False
    anycast: str | None = None
    announced: bool = False  # the anycast route is announced and ExaBGP acknowledged it
    bgp: BgpStatus | None = None
    gateway_ok: bool | None = None
    policy: str = ""  # "" from an agent that does not say
    forced: bool = False
    peer_outdated_from: int | None = None  # as primary: the peer is outdated from this LSN
    self_outdated_from: int | None = None  # as standby: the primary said this node is outdated
    degraded_since: float | None = None  # epoch seconds: acknowledged alone since
    alone_transactions: int | None = None  # at most this many write transactions alone
    alone_wal_bytes: int | None = None  # WAL written since the peer became outdated
    switchover: bool = False  # a switchover is under way
    # Maintenance mode (escadm ha pause): no automatic failover or demotion; who and when
    # (epoch seconds). The peer's own copy is peer.pause.
    paused: bool = False
    paused_by: str = ""
    paused_at: float | None = None
    # A scheduled switchover (escadm ha switchover --at): epoch seconds, who scheduled it, and
    # what the last scheduled one did ("" before any).
    switchover_at: float | None = None
    switchover_at_by: str = ""
    switchover_note: str = ""
    # Bytes free for the database here (None: not measured) and database.min_free_mb in bytes
    # (0: not watched); the peer's free space is peer.disk_free.
    disk_free: int | None = None
    min_free: int = 0
    last_transition: Transition | None = None
    progress: Progress | None = None
    long_action: str | None = None  # "following esc-ha-0"
    diverged_dumps: tuple[str, ...] = ()  # transactions kept before a rewind (never lost)
    # quorum mode: the keeper's view (leader, lease left, the recorded pair) and the members
    # ("name=https://address:port", from the config)
    quorum: QuorumObs | None = None
    quorum_members: tuple[str, ...] = ()
    endpoints: Endpoints | None = None

    @property
    def degraded(self) -> bool:
        """A primary acknowledging alone: its peer is outdated."""
        return self.peer_outdated_from is not None

    @property
    def role(self) -> DbRole:
        return self.db.role


# --- writing ------------------------------------------------------------------------------


def _json(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, tuple | list):
        return [_json(v) for v in value]
    if isinstance(value, dict):
        return {k: _json(v) for k, v in value.items()}
    return value


def _object(obj: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in fields(obj):
        value = getattr(obj, f.name)
        key = f.metadata.get("key", f.name)
        out[key] = _object(value) if is_dataclass(value) else _json(value)
    return out


def status_json(view: StatusView) -> dict[str, Any]:
    """The JSON object ``GET /status`` answers (and ``escadm status --json`` prints)."""
    out = {"version": STATUS_VERSION, **_object(view)}
    out["role"] = view.role.value
    out["degraded"] = view.degraded
    out["db"]["lsn_text"] = fmt_lsn(view.db.lsn)
    return out


# --- reading ------------------------------------------------------------------------------


def _fail(where: str, value: object, kind: str) -> DriverError:
    return DriverError(f"status: {where}: {value!r:.40} is not {kind}")


def _value(tp: Any, value: object, where: str) -> Any:
    origin = get_origin(tp)
    if origin is Union or origin is types.UnionType:
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        (inner,) = (a for a in args if a is not type(None))
        return _value(inner, value, where)
    if tp is bool:
        if not isinstance(value, bool):
            raise _fail(where, value, "true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _fail(where, value, "an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
            raise _fail(where, value, "a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise _fail(where, value, "a string")
        return value
    if isinstance(tp, type) and issubclass(tp, Enum):
        try:
            return tp(value)
        except ValueError:
            raise _fail(where, value, f"one of {', '.join(m.value for m in tp)}") from None
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise _fail(where, value, "a list")
        (item, _dots) = get_args(tp)
        return tuple(_value(item, v, f"{where}[{i}]") for i, v in enumerate(value))
    if isinstance(tp, type) and is_dataclass(tp):
        return read(tp, value, where)
    raise TypeError(f"status_view: no reader for {tp!r} ({where})")  # a programming error


def read(cls: type[T], data: object, where: str = "") -> T:
    """``cls`` (a dataclass) from a JSON object, every field by its declared type."""
    if not isinstance(data, Mapping):
        raise _fail(where or "status", data, "a JSON object")
    hints = get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in fields(cls):  # type: ignore[arg-type]
        key = f.metadata.get("key", f.name)
        path = f"{where}.{key}" if where else key
        if key not in data:
            if f.default is MISSING and f.default_factory is MISSING:
                raise DriverError(f"status: {path}: missing")
            continue
        values[f.name] = _value(hints[f.name], data[key], path)
    return cls(**values)


def parse_status(data: object) -> StatusView:
    """The typed reader at the boundary (escadm, the portal): see the module's docstring."""
    if isinstance(data, Mapping):
        version = data.get("version", 1)
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise _fail("version", version, "a version number")
        if version > STATUS_VERSION:
            raise DriverError(
                f"status: version: {version} is newer than this reader knows "
                f"({STATUS_VERSION}): upgrade this package too"
            )
    return read(StatusView, data)


def parse_transition(data: object) -> Transition:
    return read(Transition, data, "history")
