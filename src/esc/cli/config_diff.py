"""What ``escadm ha set`` / ``bgp set`` print: the changed fields, secrets masked."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from esc.config.schema import EscConfig

MASK = "******"
_SECRETS = frozenset({"md5", "password", "peer_secret"})


def scrub(text: str, secret: str | None) -> str:
    """``text`` with ``secret`` masked (no error message ever quotes it)."""
    return text.replace(secret, MASK) if secret else text


def _show(key: str, value: object) -> str:
    if value is None or value == []:
        return "(unset)"
    if key.rsplit(".", 1)[-1] in _SECRETS:
        return MASK if value else "(empty)"
    if isinstance(value, list):
        return " ".join(_show(key, v) for v in value)
    if isinstance(value, dict) and {"dest", "gateway", "iface"} <= value.keys():
        gw = value["gateway"]
        if ":" in str(gw):
            return f"[{value['dest']}]:[{gw}]:{value['iface']}"
        return f"{value['dest']}:{gw}:{value['iface']}"
    return str(value)


def _flat(data: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def diff_lines(old: EscConfig, new: EscConfig) -> list[str]:
    """``field: old → new`` for every changed field, secrets masked."""
    a = _flat(old.model_dump(mode="json"), "")
    b = _flat(new.model_dump(mode="json"), "")
    lines = []
    for key in sorted(a.keys() | b.keys()):
        if a.get(key) == b.get(key):
            continue
        old_text, new_text = _show(key, a.get(key)), _show(key, b.get(key))
        if old_text == new_text == MASK:
            new_text = f"{MASK} (changed)"
        elif old_text == new_text:
            continue
        lines.append(f"{key}: {old_text} → {new_text}")
    return lines
