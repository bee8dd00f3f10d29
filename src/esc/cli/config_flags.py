"""escadm's config flags and the schema fields they set: one table, read both ways.

``ha set`` and ``bgp set`` pass each flag's text to its field (:data:`FIELD_OF_FLAG`) and the
schema parses and checks it: escadm holds no value rule. A schema error names a dotted field
(``ha.kad_vri``, ``ha.routes.0.gateway``); :func:`as_flag_error` names the flag that sets it
(``--kad_vri``, ``--route``) through the reverse table, :data:`FLAG_OF_FIELD`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from typing import Any

from esc.config.types import decimal_int, decimal_seconds
from esc.errors import ConfigError

# flag (argparse dest, as typed without "--") -> the schema field it sets
HA_FIELDS: Mapping[str, str] = {
    "ha_node_list": "ha.ha_node_list",
    "kad_vip": "ha.kad_vip",
    "kad_vif": "ha.kad_vif",
    "kad_vri": "ha.kad_vri",
    "ha_mode": "ha.ha_mode",
    "db_volume_id": "ha.db_volume_id",
    "db_volume_path": "ha.db_volume_path",
    "route": "ha.routes",
    "advert_int": "ha.advert_int",
    "gateway_ip": "ha.gateway_ip",
    "quorum": "ha.quorum",
    "witness": "ha.witness",
}
BGP_FIELDS: Mapping[str, str] = {
    "local_ip": "bgp.local_ip",
    "anycast_ip": "bgp.anycast_ip",
    "remote_ip": "bgp.remote_ip",
    "local_as": "bgp.local_as",
    "remote_as": "bgp.remote_as",
    "local_router_id": "bgp.local_router_id",
    "md5": "bgp.md5",
}
FIELD_OF_FLAG: Mapping[str, str] = {**HA_FIELDS, **BGP_FIELDS}
FLAG_OF_FIELD: Mapping[str, str] = {field: f"--{flag}" for flag, field in FIELD_OF_FLAG.items()}

HA_FLAGS = tuple(HA_FIELDS)
BGP_FLAGS = tuple(BGP_FIELDS)
# the flags that identify a section: given together, they rebuild it (ha_set.py)
HA_REQUIRED = ("ha_node_list", "kad_vip", "kad_vif")
BGP_REQUIRED = ("local_ip", "anycast_ip", "remote_ip", "local_as", "remote_as", "local_router_id")
# The flags whose field is a number: their text is made one here (the schema is strict, and
# takes no text for a number), ASCII digits only; the schema then checks the range.
NUMBER_FLAGS: Mapping[str, Callable[[str], int | float]] = {
    "kad_vri": decimal_int,
    "advert_int": decimal_seconds,
    "local_as": decimal_int,
    "remote_as": decimal_int,
}
# the two volume settings are exclusive: setting one alone clears the other
_EXCLUSIVE = {"db_volume_id": "db_volume_path", "db_volume_path": "db_volume_id"}


def flag_of(field: str) -> str | None:
    """The flag setting the dotted ``field`` or the field it lies in (``ha.routes.0`` ->
    ``--route``); None when no flag sets it."""
    parts = field.split(".")
    for n in range(len(parts), 0, -1):
        flag = FLAG_OF_FIELD.get(".".join(parts[:n]))
        if flag is not None:
            return flag
    return None


def as_flag_error(exc: ConfigError) -> ConfigError:
    """``exc`` naming the flag the operator typed, when a flag sets its field."""
    flag = flag_of(exc.field)
    return exc if flag is None else ConfigError(flag, exc.message)


def section_values(given: Mapping[str, Any]) -> dict[str, Any]:
    """The section's field values for the flags ``given``, as typed: the schema parses them,
    but for the numbers (:data:`NUMBER_FLAGS`; bad text is a ConfigError naming the flag).
    ``--ha_node_list`` takes the guide's ``IP1,IP2`` form as well as ``IP1 IP2``."""
    values: dict[str, Any] = {}
    for flag, value in given.items():
        name = FIELD_OF_FLAG[flag].split(".", 1)[1]
        number = NUMBER_FLAGS.get(flag)
        if number is not None and isinstance(value, str):
            try:
                values[name] = number(value)
            except ValueError as exc:
                raise ConfigError(f"--{flag}", str(exc)) from None
        elif flag == "ha_node_list":
            values[name] = [part for word in value for part in str(word).split(",") if part]
        else:
            values[name] = value
        other = _EXCLUSIVE.get(flag)
        if other is not None and other not in given:
            values[other] = None
        if flag == "quorum" and value == "none" and "witness" not in given:
            values["witness"] = None  # leaving quorum mode forgets the witness
    return values


def arg_count(text: str) -> int:
    """argparse ``type`` of a count flag (``-n``): ASCII digits only, as every integer flag."""
    try:
        return decimal_int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def arg_seconds(text: str) -> float:
    """argparse ``type`` of a seconds flag (``--wait``): ASCII decimal, no nan/inf/exponent."""
    try:
        return decimal_seconds(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
