"""The agent's status on the wire (esc.status_view): written and read back the same, a
malformed one refused naming its field; and `escadm ha status` rendering it: both nodes side
by side, lag and LSNs readable."""

from __future__ import annotations

import json
import math
import time
from dataclasses import replace
from typing import Any

import pytest
from statuses import peer_of, status, status_dict

from esc.agent.monitor_http import endpoints
from esc.cli.agent_cmd import _side_by_side, health_line, progress_line, serving_as_expected
from esc.drivers.base import BgpStatus
from esc.errors import DriverError
from esc.model import DbRole, NodeState, QuorumObs, SyncRecord
from esc.status_view import STATUS_VERSION, Progress, parse_status, status_json

STATUS = status(lsn=0x3000060, peer=peer_of(True, 0x3000060, lsn=0x3000000))


# --- the wire ------------------------------------------------------------------------------


def test_a_status_reads_back_as_it_was_written_through_json() -> None:
    full = replace(
        STATUS,
        bgp=BgpStatus(True, True, True, True, session="up", pid=42),
        progress=Progress("cloning from esc-ha-1", 10, 20, 5.0),
        long_action="following esc-ha-1",
        diverged_dumps=("/var/lib/esc/diverged/diverged-1.txt",),
        peer=replace(STATUS.peer, silent_for=math.inf),  # never answered: Infinity in JSON
    )
    for view in (STATUS, full, status(state="BACKUP", role="standby")):
        text = json.dumps(status_json(view))
        assert parse_status(json.loads(text)) == view


def test_the_json_keeps_the_keys_operators_scripts_read() -> None:
    data = status_dict(lsn=0x3000060)
    assert data["version"] == STATUS_VERSION
    assert (data["state"], data["role"], data["degraded"]) == ("MASTER", "primary", False)
    assert data["db"]["lsn_text"] == "0/3000060"
    assert data["last_transition"]["from"] == "SWITCHING"
    assert data["peer"]["state"] == "BACKUP" and data["service"]["active"] is True


def _broken(path: str, value: Any) -> dict[str, Any]:
    data = status_dict()
    *parents, key = path.split(".")
    obj = data
    for p in parents:
        obj = obj[p]
    if value is KeyError:
        del obj[key]
    else:
        obj[key] = value
    return data


@pytest.mark.parametrize(
    ("path", "value", "says"),
    [
        ("state", "PRIMARY", "state: 'PRIMARY' is not one of MASTER, BACKUP"),
        ("state", KeyError, "state: missing"),
        ("vip_held", 1, "vip_held: 1 is not true or false"),
        ("peer.timeline", "x", "peer.timeline: 'x' is not an integer"),
        ("peer.timeline", True, "peer.timeline: True is not an integer"),
        ("db.replay_lag_s", math.nan, "db.replay_lag_s: nan is not a number"),
        ("db.streaming_to", "esc-ha-1", "db.streaming_to: 'esc-ha-1' is not a list"),
        ("db.streaming_to", [1], "db.streaming_to[0]: 1 is not a string"),
        ("db", [], "db: [] is not a JSON object"),
        ("last_transition.from", KeyError, "last_transition.from: missing"),
        ("version", STATUS_VERSION + 1, "is newer than this reader knows"),
        ("version", "1", "version: '1' is not a version number"),
    ],
)
def test_a_malformed_status_is_refused_naming_its_field(path: str, value: Any, says: str) -> None:
    with pytest.raises(DriverError, match=r"^status: ") as err:
        parse_status(_broken(path, value))
    assert says in str(err.value)


def test_what_a_reader_derives_is_derived_again_and_unknown_keys_are_ignored() -> None:
    data = status_dict() | {"degraded": True, "role": "standby", "from_the_future": 1}
    view = parse_status(data)
    assert not view.degraded and view.role is DbRole.PRIMARY
    assert parse_status(_broken("progress", KeyError)).progress is None  # added later: optional
    with pytest.raises(DriverError, match="status: status"):
        parse_status([])


# --- escadm --------------------------------------------------------------------------------


def test_side_by_side_has_both_nodes_lsn_text_and_lag() -> None:
    text = _side_by_side(STATUS)
    assert "esc-ha-0" in text and "esc-ha-1" in text
    lines = {line.split()[0]: line for line in text.splitlines() if line.strip()}
    assert "0/3000060" in lines["lsn"] and "0/3000000" in lines["lsn"]
    assert [ln for ln in text.splitlines() if ln.startswith("replay lag")] == [
        "replay lag -          96 B, 0.2 s"
    ]
    assert "MASTER" in lines["state"] and "BACKUP" in lines["state"]
    assert "last transition" in text and "SWITCHING -> MASTER" in text


def test_anycast_holder_is_shown_when_bgp_is_configured() -> None:
    assert "announces" not in _side_by_side(STATUS)
    st = replace(
        STATUS,
        anycast="203.0.113.200",
        announced=True,
        peer=replace(STATUS.peer, announced=False),
    )
    text = _side_by_side(st)
    row = [ln for ln in text.splitlines() if ln.startswith("announces")]
    assert row == ["announces  True       False"]
    assert "anycast 203.0.113.200" in text


def test_a_degraded_primary_shows_what_it_holds_alone() -> None:
    since = time.mktime((2026, 12, 1, 20, 6, 35, 0, 0, -1))
    st = replace(STATUS, peer_outdated_from=0x3000000, degraded_since=since, alone_wal_bytes=4096)
    text = _side_by_side(st)
    assert "DEGRADED: acknowledged alone" in text
    assert "since 20:06:35, 4096 B of WAL the peer lacks" in text
    assert "DEGRADED" not in _side_by_side(STATUS)
    counted = _side_by_side(replace(st, alone_transactions=17))
    assert "since 20:06:35, at most 17 write transactions and 4096 B of WAL the peer" in counted
    assert "at most 1 write transaction and" in _side_by_side(replace(st, alone_transactions=1))
    assert "DEGRADED" in health_line(st)


def test_quorum_mode_shows_the_members_the_leader_key_and_the_record() -> None:
    q = QuorumObs(
        reachable=True, holder=True, leader="esc-ha-0", sync=SyncRecord("esc-ha-0", "esc-ha-1"),
        sync_revision=9, serve_left=1.84,
    )  # fmt: skip
    members = ("esc-ha-0=https://192.0.2.10:2379", "witness=https://192.0.2.30:2379")
    st = replace(STATUS, quorum=q, quorum_members=members)
    assert parse_status(json.loads(json.dumps(status_json(st)))) == st
    text = _side_by_side(st)
    assert "members esc-ha-0=https://192.0.2.10:2379 witness=https://192.0.2.30:2379" in text
    assert "leader key: this node, lease 1.8s left" in text
    assert "recorded primary esc-ha-0, sync standby esc-ha-1" in text
    alone = replace(q, holder=False, leader="esc-ha-1", sync=SyncRecord("esc-ha-1"))
    text = _side_by_side(replace(st, quorum=alone))
    assert "leader key: esc-ha-1" in text and "sync standby none (acknowledging alone)" in text
    cut = QuorumObs(reachable=False, holder=False, error="no member answered")
    assert "etcd unreachable: no member answered" in _side_by_side(replace(st, quorum=cut))
    assert "quorum" not in _side_by_side(STATUS)


def test_serving_as_expected_by_role() -> None:
    assert serving_as_expected(STATUS)
    assert not serving_as_expected(replace(STATUS, vip_held=False))
    standby = status(state="BACKUP", role="standby")
    assert serving_as_expected(standby)
    assert not serving_as_expected(replace(standby, db=replace(standby.db, streaming=False)))
    assert not serving_as_expected(replace(STATUS, state=NodeState.FAULT))


def test_progress_line() -> None:
    assert progress_line(None) is None
    line = progress_line(Progress("cloning from esc-ha-0", 50_000_000, 200_000_000))
    assert line == "cloning from esc-ha-0: 25% (50.0 of 200.0 MB)"
    assert progress_line(Progress("x", 1_000_000, 0)) == "x: (1.0 MB)"


def test_an_older_agents_status_is_read_without_the_fields_added_since() -> None:
    """A package upgraded before its agent restarted: the new escadm reads the running older
    agent (found by a benchmark that ran this escadm against the agents of 2026-12-01)."""
    data = status_dict()
    for key in ("version", "rule", "degraded_since", "alone_transactions", "alone_wal_bytes"):
        del data[key]
    for key in ("xid_xmax", "xid_xmin", "sync_names", "streaming_to"):
        del data["db"][key]
    for key in ("served_timeline", "top_timeline", "agent_silent_for", "tells_outdated"):
        del data["peer"][key]
    view = parse_status(data)
    assert (view.rule, view.alone_transactions, view.degraded_since) == ("", None, None)
    assert view.db.xid_xmax == 0 and view.peer.served_timeline is None
    assert serving_as_expected(view)


def test_the_monitoring_endpoints_round_trip_and_are_shown() -> None:
    st = replace(STATUS, endpoints=endpoints("192.0.2.10", 8008))
    back = parse_status(json.loads(json.dumps(status_json(st))))
    assert back.endpoints == st.endpoints
    assert status_json(st)["endpoints"]["replica"] == "https://192.0.2.10:8008/replica"
    assert "monitoring https://192.0.2.10:8008 (" in _side_by_side(st)
    assert "monitoring" not in _side_by_side(replace(st, endpoints=endpoints("192.0.2.10", 0)))
    assert parse_status(status_json(STATUS)).endpoints is None  # an older agent's status


def test_ha_status_shows_the_pause_and_a_scheduled_switchover() -> None:
    assert "PAUSED" not in _side_by_side(STATUS)
    st = replace(
        STATUS, paused=True, paused_by="escadm", switchover_at=1.8e9, switchover_at_by="ops"
    )
    text = _side_by_side(st)
    assert "PAUSED (maintenance mode) by escadm" in text
    assert "switchover scheduled at " in text and " by ops" in text
