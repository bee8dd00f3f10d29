"""The peer view on the wire: what an agent publishes on ``GET /peer`` and how its peer reads
it. One definition for both ends (``peer_view`` builds it, ``parse_view`` reads it).

Versioned: ``version`` is the view's format. A change a reader of the previous format would
misread bumps it; a view of a newer version than this agent knows is refused (the peer counts
as unreachable, named in the log: upgrade this node too). Keys added within a version are
optional for the reader (an older agent does not send them: a rolling upgrade), and unknown
keys are ignored. A view without ``version`` is version 1 (agents older than the field).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from esc.errors import DriverError
from esc.model import DbRole, DbStatus, NodeState, Pause, PeerView

VERSION = 1


_LSN_MAX = (1 << 64) - 1
_FLAGS = ("serving", "vip_held", "streaming", "handing_over", "announced")
REASON_MAX = 500


def _int(data: Mapping[str, Any], key: str, *, nullable: bool = False) -> int | None:
    value = data[key]
    if value is None and nullable:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _LSN_MAX:
        kind = "an integer from 0 to 2**64-1" + (" or null" if nullable else "")
        raise DriverError(f"peer view: {key}: {value!r:.40} is not {kind}")
    return value


def parse_view(data: object, expect_node: str | None = None, silent_for: float = 0.0) -> PeerView:
    """The typed parser at the boundary: the JSON object a peer published, every key present
    with its type (unknown keys are ignored), into a :class:`PeerView`. Anything else raises
    :class:`DriverError` naming the field, which the poller counts as "peer unreachable"."""
    if not isinstance(data, dict):
        raise DriverError("peer view: not a JSON object")
    version = data.get("version", 1)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise DriverError(f"peer view: version: {version!r:.40} is not a version number")
    if version > VERSION:
        raise DriverError(
            f"peer view: version: {version} is newer than this agent reads ({VERSION}): "
            "upgrade this node too"
        )
    keys = (
        "node", "state", "db_role", "timeline", "lsn", "receive_lsn", "replay_lag_s",
        "outdated_lsn", "reason", *_FLAGS,
    )  # fmt: skip
    missing = [k for k in keys if k not in data]
    if missing:
        raise DriverError(f"peer view: {missing[0]}: missing")
    node = data["node"]
    if not isinstance(node, str) or (expect_node is not None and node != expect_node):
        raise DriverError(f"peer view: node: {node!r:.40} is not the peer {expect_node!r}")
    state, role = data["state"], data["db_role"]
    if not isinstance(state, str) or state not in {s.value for s in NodeState}:
        raise DriverError(f"peer view: state: {state!r:.40} is not a node state")
    if not isinstance(role, str) or role not in {r.value for r in DbRole}:
        raise DriverError(f"peer view: db_role: {role!r:.40} is not a database role")
    for flag in _FLAGS:
        if not isinstance(data[flag], bool):
            raise DriverError(f"peer view: {flag}: {data[flag]!r:.40} is not true or false")
    lag = data["replay_lag_s"]
    if (
        isinstance(lag, bool)
        or not isinstance(lag, int | float)
        or not math.isfinite(lag)
        or lag < 0
    ):
        raise DriverError(f"peer view: replay_lag_s: {lag!r:.40} is not a number of seconds")
    reason = data["reason"]
    if not isinstance(reason, str):
        raise DriverError(f"peer view: reason: {reason!r:.40} is not a string")
    # Absent from the view of an agent older than this field (a rolling upgrade): it never
    # reports itself outdated, as before.
    outdated = data.get("outdated", False)
    if not isinstance(outdated, bool):
        raise DriverError(f"peer view: outdated: {outdated!r:.40} is not true or false")
    if "cycle" in data:
        _int(data, "cycle")
    # Absent from an older agent's view: not known, which counts as served (facts.served_current).
    served = _int(data, "served_timeline", nullable=True) if "served_timeline" in data else None
    mark = _int(data, "outdated_lsn", nullable=True)
    # Absent from an older agent's view: it does not know maintenance mode (None).
    pause = parse_pause(data["pause"]) if "pause" in data else None
    # Absent from an older agent's view: not known (nothing is handed to it on a full disk).
    disk_free = _int(data, "disk_free", nullable=True) if "disk_free" in data else None
    return PeerView(
        reachable=True,
        silent_for=silent_for,
        state=NodeState(state),
        db_role=DbRole(role),
        timeline=_int(data, "timeline") or 0,
        lsn=_int(data, "lsn") or 0,
        receive_lsn=_int(data, "receive_lsn") or 0,
        replay_lag_s=float(lag),
        outdated_lsn=mark,
        serving=data["serving"],
        vip_held=data["vip_held"],
        streaming=data["streaming"],
        handing_over=data["handing_over"],
        announced=data["announced"],
        outdated=outdated,
        tells_outdated="outdated" in data,
        last_outdated_lsn=mark if role == DbRole.PRIMARY.value else None,
        reason=reason[:REASON_MAX],
        served_timeline=served,
        pause=pause,
        disk_free=disk_free,
    )


BY_MAX = 100


def parse_pause(data: object) -> Pause:
    """The peer's ``pause`` object: ``{"paused", "seq", "by", "at"}``, each typed."""
    if not isinstance(data, dict):
        raise DriverError(f"peer view: pause: {data!r:.40} is not a JSON object")
    missing = [k for k in ("paused", "seq", "by", "at") if k not in data]
    if missing:
        raise DriverError(f"peer view: pause.{missing[0]}: missing")
    if not isinstance(data["paused"], bool):
        raise DriverError(f"peer view: pause.paused: {data['paused']!r:.40} is not true or false")
    seq = data["seq"]
    if isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq <= _LSN_MAX:
        raise DriverError(f"peer view: pause.seq: {seq!r:.40} is not an integer from 0 to 2**64-1")
    by = data["by"]
    if not isinstance(by, str):
        raise DriverError(f"peer view: pause.by: {by!r:.40} is not a string")
    at = data["at"]
    if at is not None and (
        isinstance(at, bool) or not isinstance(at, int | float) or not math.isfinite(at) or at < 0
    ):
        raise DriverError(f"peer view: pause.at: {at!r:.40} is not a time (epoch seconds) or null")
    return Pause(data["paused"], seq, by[:BY_MAX], None if at is None else float(at))


def pause_json(p: Pause) -> dict[str, Any]:
    return {"paused": p.paused, "seq": p.seq, "by": p.by, "at": p.at}


def peer_view(
    *,
    node: str,
    state: NodeState,
    db: DbStatus,
    serving: bool,
    vip_held: bool,
    announced: bool,
    outdated_lsn: int | None,
    outdated: bool,
    handing_over: bool,
    reason: str,
    cycle: int,
    served_timeline: int | None = None,
    pause: Pause | None = None,
    disk_free: int | None = None,
) -> dict[str, Any]:
    """This node's view, as its peer reads it (``parse_view``)."""
    return {
        "version": VERSION,
        "node": node,
        "state": state.value,
        "db_role": db.role.value,
        "timeline": db.timeline,
        "lsn": db.lsn,
        "receive_lsn": db.receive_lsn,
        "replay_lag_s": db.replay_lag_s,
        "streaming": db.streaming,
        "serving": serving,
        "vip_held": vip_held,
        "announced": announced,
        "outdated_lsn": outdated_lsn,  # the mark this node (as primary) puts on its peer
        "outdated": outdated,  # this node holds such a mark itself
        "handing_over": handing_over,
        "reason": reason,
        "cycle": cycle,  # counts this agent's cycles: a stale view shows a stuck agent
        "served_timeline": served_timeline,  # the newest timeline it served on (None: unknown)
        # the pair's maintenance mode as this node holds it (added within version 1)
        "pause": pause_json(pause if pause is not None else Pause()),
        # bytes free for the database (None: not measured; added within version 1)
        "disk_free": disk_free,
    }


def same_view(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    """Two views say the same thing, the cycle counter aside (it changes every cycle, and
    ``parse_view``'s result does not depend on it)."""
    if a is None or b is None:
        return a is b
    return a.keys() == b.keys() and all(v == b[k] for k, v in a.items() if k != "cycle")
