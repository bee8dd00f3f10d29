"""`escadm ha status` rendering: both nodes side by side, lag and LSNs readable."""

from __future__ import annotations

import time

from esc.cli.agent_cmd import _lag, _side_by_side

STATUS = {
    "node": "esc-ha-0",
    "peer_name": "esc-ha-1",
    "state": "MASTER",
    "db": {"role": "primary", "timeline": 2, "lsn": 0x3000060, "streaming": False},
    "service": {"active": True},
    "vip_held": True,
    "vip": "192.0.2.100:eth0",
    "policy": "available",
    "degraded": False,
    "forced": False,
    "peer": {
        "reachable": True,
        "state": "BACKUP",
        "db_role": "standby",
        "timeline": 2,
        "lsn": 0x3000000,
        "receive_lsn": 0x3000060,
        "replay_lag_s": 0.25,
        "streaming": True,
        "serving": False,
        "vip_held": False,
    },
}


def test_lag_is_shown_for_a_standby_only() -> None:
    assert _lag(STATUS["peer"]) == "96 B, 0.2 s"  # type: ignore[arg-type]
    assert _lag(STATUS["db"]) == "-"  # type: ignore[arg-type]


def test_side_by_side_has_both_nodes_lsn_text_and_lag() -> None:
    text = _side_by_side(STATUS)
    assert "esc-ha-0" in text and "esc-ha-1" in text
    lines = {line.split()[0]: line for line in text.splitlines() if line.strip()}
    assert "0/3000060" in lines["lsn"] and "0/3000000" in lines["lsn"]
    assert [ln for ln in text.splitlines() if ln.startswith("replay lag")] == [
        "replay lag -          96 B, 0.2 s"
    ]
    assert "MASTER" in lines["state"] and "BACKUP" in lines["state"]


def test_anycast_holder_is_shown_when_bgp_is_configured() -> None:
    assert "announces" not in _side_by_side(STATUS)
    st = {**STATUS, "anycast": "203.0.113.200", "announced": True}
    st["peer"] = {**STATUS["peer"], "announced": False}  # type: ignore[dict-item]
    text = _side_by_side(st)
    row = [ln for ln in text.splitlines() if ln.startswith("announces")]
    assert row == ["announces  True       False"]
    assert "anycast 203.0.113.200" in text


def test_a_degraded_primary_shows_what_it_holds_alone() -> None:
    since = time.mktime((2026, 12, 1, 20, 6, 35, 0, 0, -1))
    st = {**STATUS, "degraded": True, "degraded_since": since, "alone_wal_bytes": 4096}
    text = _side_by_side(st)
    assert "DEGRADED: acknowledged alone" in text
    assert "since 20:06:35, 4096 B of WAL the peer lacks" in text
    assert "DEGRADED" not in _side_by_side(STATUS)
    counted = _side_by_side({**st, "alone_transactions": 17})
    assert "since 20:06:35, at most 17 write transactions and 4096 B of WAL the peer" in counted
    assert "at most 1 write transaction and" in _side_by_side({**st, "alone_transactions": 1})
