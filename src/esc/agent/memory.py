"""The agent's persisted memory: ``<data>/agent_memory.json``.

These fields of :class:`esc.model.Memory` survive an agent restart: ``forced`` (an operator
forced this node primary), ``peer_outdated_from`` (as primary: the peer left sync at this LSN),
``self_outdated_from`` (as standby: the primary said this node is outdated),
``served_timeline`` (the newest timeline this node served on as primary), ``top_timeline``
(the newest its database has been on: never opened again by a promotion), and the exposure
shown to operators while the peer is outdated (``alone_since``, ``alone_from_xid``), the pair's
maintenance mode (``pause``: an object ``{"paused", "seq", "by", "at"}``) and a scheduled
switchover (``switchover_at``, ``switchover_at_by``). The third
keeps an outdated standby from being promoted, so losing it is not harmless; losing the fourth
only makes a split brain fall back to comparing timelines (``core/facts.peer_outranks``).

A missing file is a first start (nothing to remember). A file that exists but cannot be read
or is not exactly what :func:`memory_text` writes (not JSON, a key missing, a wrong type) is
refused with a :class:`ConfigError` naming the file. The agent then runs ``FAULT`` with that
reason (``Agent.memory_fault``, rule ``agent-fault``: never promotes, never holds the VIP),
never writes over the file, and serves its status, so ``escadm status`` shows why; the operator
fixes or removes the file and restarts the agent. Running on the defaults instead would
silently forget that this node is outdated, and an outdated standby could then be promoted
over newer data. The file is always replaced atomically (``write_atomic``), so a
power cut cannot tear it; a bad file means a disk or a hand did it, and an operator decides.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from esc.errors import ConfigError, DriverError
from esc.model import Memory, Pause
from esc.wire import parse_pause, pause_json

MEMORY_FILE = "agent_memory.json"
PERSISTED = (
    "forced", "peer_outdated_from", "self_outdated_from", "served_timeline", "top_timeline",
    "alone_since", "alone_from_xid", "pause", "switchover_at", "switchover_at_by",
)  # fmt: skip
# Keys an older agent did not write: absent means "not known" (their Memory default), so a
# node upgraded in place starts as before. Every other key must be there.
ADDED_LATER = (
    "served_timeline", "top_timeline", "alone_since", "alone_from_xid", "pause",
    "switchover_at", "switchover_at_by",
)  # fmt: skip
_FIX = (
    "fix or restore it; remove it only if this node is known to hold current data (removing "
    "forgets an outdated mark and a forced primary)"
)


def memory_text(mem: Memory) -> str:
    data = {k: getattr(mem, k) for k in PERSISTED}
    data["pause"] = pause_json(mem.pause)
    return json.dumps(data) + "\n"


def _lsn(path: Path, data: dict[str, Any], key: str, what: str = "an LSN") -> int | None:
    value = data[key]
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(str(path), f"{key}: {value!r} is not {what} or null; {_FIX}")
    return value


def load_memory(path: Path) -> Memory:
    """The persisted fields from ``path`` (module docstring); defaults only when it is absent."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return Memory()
    except OSError as exc:
        raise ConfigError(str(path), f"cannot be read ({exc.strerror}); {_FIX}") from None
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), f"not valid JSON ({exc}); {_FIX}") from None
    if not isinstance(data, dict):
        raise ConfigError(str(path), f"not a JSON object; {_FIX}")
    missing = [k for k in PERSISTED if k not in data and k not in ADDED_LATER]
    if missing:
        raise ConfigError(str(path), f"{missing[0]}: missing; {_FIX}")
    forced = data["forced"]
    if not isinstance(forced, bool):
        raise ConfigError(str(path), f"forced: {forced!r} is not true or false; {_FIX}")
    return replace(
        Memory(),
        forced=forced,
        peer_outdated_from=_lsn(path, data, "peer_outdated_from"),
        self_outdated_from=_lsn(path, data, "self_outdated_from"),
        served_timeline=(
            _lsn(path, data, "served_timeline", "a timeline") if "served_timeline" in data else None
        ),
        top_timeline=(
            _lsn(path, data, "top_timeline", "a timeline") or 0 if "top_timeline" in data else 0
        ),
        alone_since=_time(path, data, "alone_since") if "alone_since" in data else None,
        alone_from_xid=(
            _lsn(path, data, "alone_from_xid", "a transaction id")
            if "alone_from_xid" in data
            else None
        ),
        pause=_pause(path, data),
        switchover_at=_time(path, data, "switchover_at") if "switchover_at" in data else None,
        switchover_at_by=_str(path, data, "switchover_at_by"),
    )


def _pause(path: Path, data: dict[str, Any]) -> Pause:
    if "pause" not in data:
        return Pause()
    try:
        return parse_pause(data["pause"])
    except DriverError as exc:  # the peer view's reader, which names the field
        what = str(exc).removeprefix("peer view: ")
        raise ConfigError(str(path), f"{what}; {_FIX}") from None


def _str(path: Path, data: dict[str, Any], key: str) -> str:
    value = data.get(key, "")
    if not isinstance(value, str):
        raise ConfigError(str(path), f"{key}: {value!r} is not a string; {_FIX}")
    return value


def _time(path: Path, data: dict[str, Any], key: str) -> float | None:
    value = data[key]
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1e11:
        raise ConfigError(
            str(path), f"{key}: {value!r} is not a time (epoch seconds) or null; {_FIX}"
        )
    return float(value)
