"""escadm's config flags and the schema fields they set: one table, read both ways.

``ha set`` and ``bgp set`` pass each flag's text to its field (:data:`FIELD_OF_FLAG`) and the
schema parses and checks it: escadm holds no value rule. A schema error names a dotted field
(``ha.kad_vri``, ``ha.routes.0.gateway``); :func:`as_flag_error` names the flag that sets it
(``--kad_vri``, ``--route``) through the reverse table, :data:`FLAG_OF_FIELD`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

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
    """The section's field values for the flags ``given``, as typed: the schema parses them.
    ``--ha_node_list`` takes the guide's ``IP1,IP2`` form as well as ``IP1 IP2``."""
    values: dict[str, Any] = {}
    for flag, value in given.items():
        name = FIELD_OF_FLAG[flag].split(".", 1)[1]
        if flag == "ha_node_list":
            values[name] = [part for word in value for part in str(word).split(",") if part]
        else:
            values[name] = value
        other = _EXCLUSIVE.get(flag)
        if other is not None and other not in given:
            values[other] = None
        if flag == "quorum" and value == "none" and "witness" not in given:
            values["witness"] = None  # leaving quorum mode forgets the witness
    return values
