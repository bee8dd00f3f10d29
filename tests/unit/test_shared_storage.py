"""ha_mode cinder: the decision rules for one shared volume, the volume helpers (mountinfo,
/proc/locks parsing) and the lease (a real flock on a temporary file, no mocks)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from esc.config.schema import DatabaseConfig, parse_config
from esc.core.decide import decide
from esc.core.facts import DecideConfig
from esc.core.requests import switchover_refusal
from esc.drivers.postgres import render_shared_conf
from esc.drivers.volume import VolumeLease, lock_holders, mounts_of_device, resolve_device
from esc.errors import ConfigError, DbError
from esc.model import (
    DbRole,
    DbStatus,
    Memory,
    NodeState,
    Observation,
    PeerView,
    ServiceView,
    VrrpState,
)

S = NodeState
CFG = DecideConfig(node_name="esc-ha-1", peer_name="esc-ha-0", first_node=False, mode="shared")
DETACHED = DbStatus(DbRole.STANDBY)
ATTACHED = DbStatus(DbRole.PRIMARY, timeline=1, lsn=5000)
PEER_BACKUP = PeerView(reachable=True, state=S.BACKUP, db_role=DbRole.STANDBY)
PEER_MASTER = PeerView(
    reachable=True, state=S.MASTER, db_role=DbRole.PRIMARY, timeline=1, lsn=5000, serving=True
)
SILENT = PeerView(reachable=False, silent_for=1.0)
ON = ServiceView(active=True, healthy=True)
OFF = ServiceView(active=False, healthy=True)


def obs(vrrp: VrrpState, db: DbStatus, peer: PeerView, service: ServiceView = OFF) -> Observation:
    return Observation(
        now=100.0, vrrp=vrrp, vip_held=False, db=db, service=service, peer=peer, gate_open=True
    )


def kinds(d: object) -> list[str]:
    return [a.kind for a in d.actions]  # type: ignore[attr-defined]


def test_elected_node_takes_the_volume_without_dropping_sync() -> None:
    d = decide(obs(VrrpState.MASTER, DETACHED, SILENT), Memory(S.BACKUP, peer_seen=True), CFG)
    assert d.next_state is S.SWITCHING
    assert kinds(d) == ["OpenGate", "Promote"]  # no DropSync: nothing to be outdated
    assert "taking over the shared volume" in d.reason
    assert d.memory.peer_outdated_from is None


def test_primary_serves_without_a_standby_and_without_degrading() -> None:
    d = decide(obs(VrrpState.MASTER, ATTACHED, PEER_BACKUP, ON), Memory(S.MASTER, True), CFG)
    assert d.next_state is S.MASTER
    assert d.reason == "serving as primary"
    assert d.memory.standby_lost_since is None


@pytest.mark.parametrize("vrrp", [VrrpState.BACKUP, VrrpState.FAULT, VrrpState.INIT])
def test_a_node_not_elected_releases_the_volume(vrrp: VrrpState) -> None:
    d = decide(obs(vrrp, ATTACHED, PEER_BACKUP, ON), Memory(S.MASTER, True), CFG)
    assert d.next_state is S.SWITCHING
    assert kinds(d)[-1] == "Follow"
    assert "DeactivateService" in kinds(d)
    assert "releasing the shared volume" in d.reason


def test_detached_standby_is_a_backup() -> None:
    d = decide(obs(VrrpState.BACKUP, DETACHED, PEER_MASTER), Memory(S.BACKUP, True), CFG)
    assert (d.next_state, kinds(d)) == (S.BACKUP, ["OpenGate"])
    assert "esc-ha-0's to use" in d.reason


def test_switchover_releases_at_once_when_the_peer_is_ready() -> None:
    mem = Memory(S.MASTER, peer_seen=True, switchover_since=99.0)
    d = decide(obs(VrrpState.MASTER, ATTACHED, PEER_BACKUP, ON), mem, CFG)
    assert d.next_state is S.SWITCHING
    assert kinds(d) == ["DeactivateService", "CloseGate"]


def test_switchover_needs_no_streaming_with_a_shared_volume() -> None:
    o = obs(VrrpState.MASTER, ATTACHED, PEER_BACKUP, ON)
    master = Memory(S.MASTER, peer_seen=True)
    assert switchover_refusal(o, master, CFG) is None
    replicated = replace(CFG, mode="replicated")
    assert "not streaming" in (switchover_refusal(o, master, replicated) or "")


def test_crashed_database_on_the_held_volume_is_restarted() -> None:
    d = decide(
        obs(VrrpState.MASTER, DbStatus(DbRole.STOPPED), PEER_BACKUP), Memory(S.MASTER, True), CFG
    )
    assert kinds(d)[-1] == "StartDb"


def test_unreplicated_conf_names_no_synchronous_standby() -> None:
    assert "synchronous_standby_names = ''" in render_shared_conf("a", "b", replicated=False)
    assert "FIRST 1" in render_shared_conf("a", "b")


# --- config -------------------------------------------------------------------------------

BASE = {
    "ha": {
        "ha_node_list": ["192.0.2.10", "192.0.2.11"],
        "kad_vip": "192.0.2.100",
        "kad_vif": "eth0",
    }
}


def with_ha(**kw: object) -> dict[str, object]:
    return {"ha": {**BASE["ha"], **kw}}  # type: ignore[dict-item]


@pytest.mark.parametrize("mode", ["cinder", "drbd_on_cinder"])
def test_volume_modes_need_a_volume(mode: str) -> None:
    with pytest.raises(ConfigError, match="needs db_volume_id or db_volume_path"):
        parse_config(with_ha(ha_mode=mode))


def test_volume_path_must_be_absolute() -> None:
    with pytest.raises(ConfigError, match="absolute"):
        parse_config(with_ha(ha_mode="cinder", db_volume_path="dev/vdb"))


def test_volume_id_resolves_like_openstack_virtio() -> None:
    cfg = parse_config(with_ha(ha_mode="cinder", db_volume_id="0123456789abcdef0123456789"))
    assert cfg.ha is not None
    assert resolve_device(cfg.ha, DatabaseConfig()) == Path(
        "/dev/disk/by-id/virtio-0123456789abcdef0123"
    )
    cfg = parse_config(with_ha(ha_mode="cinder", db_volume_path="/dev/vdb"))
    assert cfg.ha is not None
    assert resolve_device(cfg.ha, DatabaseConfig()) == Path("/dev/vdb")


# --- volume helpers -----------------------------------------------------------------------

MOUNTINFO = """\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
97 22 7:2 / /var/tmp/lab/esc-ha-1/esc_database rw,noatime - ext4 /dev/loop2 rw
98 22 7:2 / /srv/with\\040space rw - ext4 /dev/loop2 rw
99 22 7:3 / /other rw - ext4 /dev/loop3 rw
"""


def test_mounts_of_device_by_major_minor() -> None:
    assert mounts_of_device(MOUNTINFO, 7, 2) == [
        "/var/tmp/lab/esc-ha-1/esc_database",
        "/srv/with space",
    ]
    assert mounts_of_device(MOUNTINFO, 7, 9) == []


def test_lock_holders_from_proc_locks() -> None:
    text = (
        "1: FLOCK  ADVISORY  WRITE 4242 00:05:321 0 EOF\n"
        "1: -> FLOCK  ADVISORY  WRITE 5555 00:05:321 0 EOF\n"
        "2: POSIX  ADVISORY  WRITE 77 00:05:321 0 EOF\n"
        "3: FLOCK  ADVISORY  WRITE 88 fe:00:321 0 EOF\n"
    )
    assert lock_holders(text, 0, 5, 321) == [4242]
    assert lock_holders(text, 254, 0, 321) == [88]


def test_lease_is_exclusive_and_released(tmp_path: Path) -> None:
    dev = tmp_path / "volume"
    dev.write_bytes(b"")
    first, second = VolumeLease(dev), VolumeLease(dev)
    first.acquire()
    first.acquire()  # idempotent
    with pytest.raises(DbError, match="attached to the other node"):
        second.acquire()
    assert not second.held
    first.release()
    second.acquire()
    assert second.held and not first.held
    second.release()


def test_lease_on_a_missing_device_names_it(tmp_path: Path) -> None:
    with pytest.raises(DbError, match="cannot open"):
        VolumeLease(tmp_path / "nope").acquire()
