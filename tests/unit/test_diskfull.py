"""A full disk on the primary (issue 16): rule disk-full-handover hands the role to a standby
in sync that has room, as a planned switchover; never onto a full peer, never while paused;
the free space travels in the peer view; esc.agent.disk measures it."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest

from esc.agent.disk import free_for_db
from esc.config.node import DatabaseConfig
from esc.core.decide import decide
from esc.core.facts import DecideConfig
from esc.errors import DriverError
from esc.model import (
    DbRole,
    DbStatus,
    Memory,
    NodeState,
    Observation,
    Pause,
    PeerView,
    ServiceView,
    VrrpState,
)
from esc.wire import parse_view, peer_view

S = NodeState
MB = 1 << 20
CFG = DecideConfig(node_name="esc-ha-0", peer_name="esc-ha-1", first_node=True,
                   min_free_bytes=256 * MB)  # fmt: skip
PRIMARY_DB = DbStatus(DbRole.PRIMARY, timeline=1, lsn=900, sync_standby="esc-ha-1", sync_names="x")
ROOMY_PEER = PeerView(
    True, state=S.BACKUP, db_role=DbRole.STANDBY, timeline=1, lsn=900, streaming=True,
    disk_free=10_000 * MB,
)  # fmt: skip
MASTER = Memory(state=S.MASTER, peer_seen=True)


def serving(disk_free: int | None, peer: PeerView = ROOMY_PEER) -> Observation:
    return Observation(
        now=100.0,
        vrrp=VrrpState.MASTER,
        vip_held=True,
        db=PRIMARY_DB,
        service=ServiceView(active=True, healthy=True),
        peer=peer,
        gate_open=True,
        disk_free=disk_free,
    )


def test_a_full_disk_hands_over_to_a_standby_with_room() -> None:
    d = decide(serving(0), MASTER, CFG)
    assert d.rule_id == "disk-full-handover"
    assert d.next_state is S.SWITCHING
    assert d.memory.switchover_since == 100.0  # the planned switchover's path from here
    assert list(d.action_kinds) == ["DeactivateService"]  # writes quiesced, the VIP still held
    assert "disk full: 0 MB free for the database" in d.reason
    assert "handing over to esc-ha-1 (10000 MB free)" in d.reason
    # next cycle: the switchover's own rules release the VIP once the standby caught up
    nxt = replace(serving(0), now=100.2, service=ServiceView(active=False, healthy=True))
    d2 = decide(nxt, d.memory, CFG)
    assert d2.rule_id == "handover-release" and "CloseGate" in d2.action_kinds


@pytest.mark.parametrize(
    ("peer", "why"),
    [
        (replace(ROOMY_PEER, disk_free=100 * MB), "esc-ha-1 has no room either (100 MB free)"),
        (replace(ROOMY_PEER, disk_free=None), "esc-ha-1 has no room either (? free)"),
        (replace(ROOMY_PEER, streaming=False), "is not streaming"),
        (PeerView(False, silent_for=3.0), "is not reachable"),
        (replace(ROOMY_PEER, outdated=True), "still marked outdated"),
    ],
)
def test_never_onto_a_peer_that_is_full_too_or_not_in_sync(peer: PeerView, why: str) -> None:
    d = decide(serving(10 * MB, peer), MASTER, CFG)
    assert d.rule_id.startswith("serve")
    assert d.memory.switchover_since is None
    assert "ActivateService" not in d.action_kinds and "DeactivateService" not in d.action_kinds
    assert "DISK FULL: 10 MB free for the database, under database.min_free_mb (256 MB)" in d.reason
    assert "not handing over: " in d.reason and why in d.reason


def test_not_while_paused() -> None:
    d = decide(serving(0), replace(MASTER, pause=Pause(True, 1, "op", 1.0)), CFG)
    assert d.rule_id.startswith("serve") and "not handing over: paused" in d.reason


@pytest.mark.parametrize("free", [256 * MB, 10_000 * MB, None])
def test_room_enough_or_not_measured_serves_as_before(free: int | None) -> None:
    d = decide(serving(free), MASTER, CFG)
    assert d.rule_id == "serve/in-sync" and "DISK" not in d.reason.upper()


def test_off_when_min_free_is_zero() -> None:
    d = decide(serving(0), MASTER, replace(CFG, min_free_bytes=0))
    assert d.rule_id == "serve/in-sync"


def test_the_free_space_travels_in_the_peer_view() -> None:
    view = peer_view(
        node="esc-ha-1", state=S.BACKUP, db=DbStatus(DbRole.STANDBY), serving=False,
        vip_held=False, announced=False, outdated_lsn=None, outdated=False,
        handing_over=False, reason="", cycle=1, disk_free=42 * MB,
    )  # fmt: skip
    assert parse_view(view, "esc-ha-1").disk_free == 42 * MB
    del view["disk_free"]  # an older agent's view: not known
    assert parse_view(view, "esc-ha-1").disk_free is None
    for bad in (-1, "10", 1.5, True):
        with pytest.raises(DriverError, match="disk_free"):
            parse_view({**view, "disk_free": bad}, "esc-ha-1")


def test_the_threshold_is_in_the_schema() -> None:
    assert DatabaseConfig().min_free_mb == 256
    with pytest.raises(ValueError, match="min_free_mb"):
        DatabaseConfig(min_free_mb=-1)


def test_free_for_db_measures_the_data_and_wal_filesystems(tmp_path: Path) -> None:
    assert free_for_db(tmp_path / "pgdata") is None  # no data directory yet
    pgdata = tmp_path / "pgdata"
    pgdata.mkdir()
    free = free_for_db(pgdata)
    assert free is not None and free > 0
    (pgdata / "pg_wal").symlink_to(Path("/dev/shm"))  # WAL on another filesystem: the smaller
    both = free_for_db(pgdata)
    shm = os.statvfs("/dev/shm")
    assert both is not None and both <= free and both <= shm.f_bavail * shm.f_frsize
