"""Pure pieces around the loop: reload refusals, switchover pre-checks, FIFO lines, the
transition log. (The peer view's parser: test_peer_api.py.)"""

from __future__ import annotations

from pathlib import Path

from esc.agent.history import KEEP, History
from esc.agent.loop import live_change_refusal
from esc.config.schema import parse_config
from esc.core.facts import DecideConfig
from esc.core.requests import switchover_refusal
from esc.drivers.keepalived import parse_fifo_line
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


def _cfg(**ha: object) -> dict[str, object]:
    base: dict[str, object] = {
        "ha_node_list": ["192.0.2.10", "192.0.2.11"],
        "kad_vip": "192.0.2.100",
        "kad_vif": "eth0",
    }
    base.update(ha)
    return {"ha": base}


def test_reload_applies_timing_and_refuses_what_would_split_the_pair() -> None:
    old = parse_config(_cfg())
    assert live_change_refusal(old, parse_config(_cfg(advert_int=0.3))) is None
    assert live_change_refusal(old, parse_config(_cfg(kad_vip="192.0.2.101"))) == "ha.kad_vri"
    assert live_change_refusal(old, parse_config(_cfg(kad_vri=100))) is None  # same effective
    assert live_change_refusal(old, parse_config(_cfg(kad_vif="eth1"))) == "ha.kad_vif"
    moved = _cfg(ha_node_list=["192.0.2.10", "192.0.2.12"])
    assert live_change_refusal(old, parse_config(moved)) == "ha.ha_node_list"
    db = {**_cfg(), "database": {"port": 5433}}
    assert live_change_refusal(old, parse_config(db)) == "database"
    gw = parse_config(_cfg(gateway_ip="192.0.2.1"))
    assert live_change_refusal(old, gw).startswith("ha.gateway_ip")  # type: ignore[union-attr]
    moved_gw = parse_config(_cfg(gateway_ip="192.0.2.2"))
    assert live_change_refusal(gw, moved_gw) is None  # another address: retargeted live


def _obs(peer: PeerView, sync: str | None = "esc-ha-1") -> Observation:
    return Observation(
        now=1.0,
        vrrp=VrrpState.MASTER,
        vip_held=True,
        db=DbStatus(DbRole.PRIMARY, sync_standby=sync),
        service=ServiceView(True, True),
        peer=peer,
    )


def test_switchover_precheck_names_the_reason() -> None:
    cfg = DecideConfig(node_name="esc-ha-0", peer_name="esc-ha-1", first_node=True)
    master, backup = Memory(NodeState.MASTER), Memory(NodeState.BACKUP)
    ok = PeerView(True, state=NodeState.BACKUP, db_role=DbRole.STANDBY, streaming=True)
    assert switchover_refusal(_obs(ok), master, cfg) is None
    assert "not MASTER" in str(switchover_refusal(_obs(ok), backup, cfg))
    silent = PeerView(False, silent_for=3)
    assert "not reachable" in str(switchover_refusal(_obs(silent), master, cfg))
    lagging = PeerView(True, state=NodeState.BACKUP, db_role=DbRole.STANDBY, streaming=False)
    assert "not streaming" in str(switchover_refusal(_obs(lagging), master, cfg))
    assert "synchronous" in str(switchover_refusal(_obs(ok, sync=None), master, cfg))
    going = Memory(NodeState.MASTER, switchover_since=0.5)
    assert "already in progress" in str(switchover_refusal(_obs(ok), going, cfg))
    # In sync again but still marked outdated (by this node, or in the standby's own memory):
    # handed over now, the standby would veto itself when elected.
    marked = Memory(NodeState.MASTER, peer_outdated_from=5)
    assert "still marked outdated" in str(switchover_refusal(_obs(ok), marked, cfg))
    own = PeerView(True, state=NodeState.BACKUP, db_role=DbRole.STANDBY, streaming=True,
                   outdated=True)  # fmt: skip
    assert "still marked outdated" in str(switchover_refusal(_obs(own), master, cfg))


def test_fifo_lines() -> None:
    assert parse_fifo_line('INSTANCE "ESC" MASTER 101') is VrrpState.MASTER
    assert parse_fifo_line('INSTANCE "ESC" FAULT 0') is VrrpState.FAULT
    assert parse_fifo_line('GROUP "G" MASTER 101') is None
    assert parse_fifo_line("garbage") is None


def test_history_keeps_the_last_thousand_and_survives_a_torn_line(tmp_path: Path) -> None:
    path = tmp_path / "history.jsonl"
    h = History(path)
    for i in range(KEEP + KEEP // 10 + 5):
        h.add("BACKUP", "MASTER", f"r{i}", at=float(i))
    with open(path, "a") as fh:
        fh.write('{"time": 1, "from"')  # a power cut mid-write
    again = History(path)
    items = again.last()
    assert len(items) == KEEP
    assert items[-1]["reason"] == f"r{KEEP + KEEP // 10 + 4}"
