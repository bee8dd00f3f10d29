"""The rules as data (core/rules.py): every edge is in the state table, ids are unique, and
over a grid of situations decide() never raises and every rule of each mode fires."""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from esc.core import diagram
from esc.core.decide import decide
from esc.core.facts import DecideConfig, Mode
from esc.core.rules import RULES
from esc.core.serving import POLICY
from esc.core.table import allowed
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

S = NodeState
CFG = DecideConfig(node_name="esc-ha-1", peer_name="esc-ha-0", first_node=True, gateway="gw",
                   min_free_bytes=256 << 20)  # fmt: skip


@pytest.mark.parametrize("mode", list(RULES))
def test_every_edge_of_every_rule_is_in_the_state_table(mode: Mode) -> None:
    bad = [
        f"{r.id}: {src.value} -> {dst.value}"
        for r in RULES[mode]
        for src, dst in r.edges.items()
        if not allowed(src, dst)
    ]
    assert not bad


@pytest.mark.parametrize("mode", list(RULES))
def test_rule_ids_are_unique_and_the_last_rule_of_each_group_catches_all(mode: Mode) -> None:
    ids = [r.id for r in RULES[mode]]
    assert len(ids) == len(set(ids)), Counter(ids).most_common(3)
    assert all(i.replace("-", "").isalnum() and i.islower() for i in ids)
    assert len({p.id for p in POLICY}) == len(POLICY)


# --- a grid of situations ------------------------------------------------------------------

DBS = [
    DbStatus(DbRole.ABSENT),
    DbStatus(DbRole.STOPPED),
    DbStatus(DbRole.STANDBY, timeline=1, lsn=900, receive_lsn=1000, streaming=True),
    DbStatus(DbRole.STANDBY, timeline=1, lsn=900, receive_lsn=900),
    DbStatus(DbRole.PRIMARY, timeline=2, lsn=1000, sync_standby="esc-ha-0", sync_names="x"),
    DbStatus(DbRole.PRIMARY, timeline=2, lsn=1000, sync_names="x"),
    DbStatus(DbRole.PRIMARY, timeline=2, lsn=1000, streaming_to=("esc-ha-0",)),
    DbStatus(DbRole.PRIMARY, timeline=1, lsn=500),
]
PEERS = [
    PeerView(False, silent_for=2.0),
    PeerView(True, state=S.MASTER, db_role=DbRole.PRIMARY, timeline=2, lsn=1000, serving=True),
    PeerView(True, state=S.MASTER, db_role=DbRole.PRIMARY, timeline=3, lsn=10, serving=True,
             outdated_lsn=800),
    PeerView(True, state=S.BACKUP, db_role=DbRole.STANDBY, timeline=2, lsn=1000, streaming=True),
    PeerView(True, state=S.BACKUP, db_role=DbRole.STANDBY, timeline=2, lsn=1000, streaming=True,
             disk_free=1 << 40),
    PeerView(True, state=S.BACKUP, db_role=DbRole.STANDBY, timeline=2, lsn=1000, streaming=True,
             outdated=True),
    PeerView(True, state=S.BACKUP, db_role=DbRole.STANDBY, timeline=2, lsn=10, streaming=True),
    PeerView(True, state=S.BACKUP, db_role=DbRole.STANDBY, timeline=2, lsn=10,
             tells_outdated=True),
    PeerView(True, state=S.SWITCHING, db_role=DbRole.PRIMARY, timeline=3, lsn=10),
    PeerView(True, state=S.STOP, db_role=DbRole.STANDBY, timeline=2, lsn=1000),
    PeerView(True, state=S.SWITCHING, db_role=DbRole.ABSENT),
    PeerView(True, state=S.SWITCHING, db_role=None),
]  # fmt: skip
MEMORIES = [
    Memory(peer_seen=True),
    Memory(),
    Memory(forced=True),
    Memory(peer_seen=True, self_outdated_from=700),
    Memory(peer_seen=True, switchover_since=99.0),
    Memory(peer_seen=True, switchover_since=50.0),
    Memory(peer_seen=True, hold_down_until=200.0),
    Memory(peer_seen=True, peer_outdated_from=600, standby_lost_since=80.0),
    Memory(peer_seen=True, standby_lost_since=90.0),
    Memory(peer_seen=True, gate_opened_at=99.8),
    Memory(peer_seen=True, pause=Pause(True, 1, "escadm on esc-ha-0", 50.0)),
]


def _grid() -> list[tuple[Observation, Memory]]:
    """Every combination of keepalived's state, the database, the peer, the memory and the
    node state; the local flags (gate, VIP, service, gateway) cycle through four variants."""
    out = []
    combos = itertools.product(VrrpState, DBS, PEERS, MEMORIES, S)
    for i, (vrrp, db, peer, mem, state) in enumerate(combos):
        extra = (i + i // 7) % 4
        o = Observation(
            now=100.0,
            vrrp=vrrp,
            vip_held=extra == 1,
            db=db,
            service=ServiceView(active=extra == 1, healthy=extra != 2, failures=3 * (extra == 2)),
            peer=peer,
            gateway_ok=False if extra == 3 and db.role is DbRole.STANDBY else None,
            gate_open=extra != 0,
            busy="following esc-ha-0" if extra == 3 and db.role is DbRole.STOPPED else None,
            disk_free=0 if extra == 1 else None,  # full, or not measured
        )
        out.append((o, replace(mem, state=state)))
        if i % 50 == 0:  # the agent's own fault (a corrupt memory file, cycles failing)
            out.append((replace(o, fault="agent_memory.json: not valid JSON"), out[-1][1]))
    return out


GRID = _grid()


@pytest.mark.parametrize("mode", list(RULES))
def test_the_agents_own_fault_always_wins_and_gives_everything_up(mode: Mode) -> None:
    """Whatever keepalived, the database, the peer and the memory say: FAULT, the gate closed,
    the VIP and the service given up, no promotion, no campaign for etcd's key."""
    cfg = replace(CFG, mode=mode, quorum=True)
    for o, mem in GRID[::7]:
        d = decide(replace(o, fault="cycles failing"), mem, cfg)
        assert d.rule_id == "agent-fault" and d.next_state is S.FAULT, (o, mem)
        assert d.reason.startswith("agent fault: cycles failing")
        kinds = [a.kind for a in d.actions]
        assert kinds[0] == "CloseGate"
        assert ("RemoveVip" in kinds) is o.vip_held
        assert ("DeactivateService" in kinds) is o.service.active
        assert set(kinds) <= {"CloseGate", "RemoveVip", "DeactivateService"}
        assert not d.campaign and not d.announce


AVAILABLE_ONLY = {"promote-alone"}  # under strict, a promoted standby waits for its peer
QUORUM_ONLY = {"quorum-unsync"}  # test_quorum_rules.py's grid
QUORUM_ONLY_RULES = {"standby-quorum-wait", "await-lease"}


@pytest.mark.parametrize("mode", list(RULES))
@pytest.mark.parametrize("policy", ["available", "strict"])
def test_over_a_grid_decide_never_raises_and_every_rule_fires(mode: Mode, policy: str) -> None:
    cfg = replace(CFG, mode=mode, policy=policy)  # type: ignore[arg-type]
    fired: Counter[str] = Counter()
    for o, mem in GRID:
        d = decide(o, mem, cfg)
        assert d.memory.state is d.next_state
        assert d.announce is (d.next_state is S.MASTER)
        fired[d.rule_id.split("/")[0]] += 1
        if "/" in d.rule_id:
            fired[d.rule_id] += 1
    never = {r.id for r in RULES[mode] if not fired[r.id]}
    expected = {r.id for r in RULES[mode] if r.id in AVAILABLE_ONLY and policy == "strict"}
    expected |= {r.id for r in RULES[mode] if r.id in QUORUM_ONLY_RULES}
    assert never == expected, f"over {len(GRID)} situations, never fired: {never}"
    if mode == "replicated":
        strict_only = {"in-sync", "streaming-again", "strict-wait"}
        available = {p.id for p in POLICY} - {"strict-wait"} - QUORUM_ONLY
        subs = strict_only if policy == "strict" else available
        missing = [s for s in subs if not fired[f"serve/{s}"]]
        assert not missing, missing


def test_the_rule_tables_in_the_architecture_document_are_the_code() -> None:
    doc = Path(__file__).parents[2] / "docs" / "architecture.md"
    text = doc.read_text()
    assert diagram.replace_block(text, diagram.render()) == text, (
        "docs/architecture.md is out of date: run "
        "`.venv/bin/python -m esc.core.diagram --write docs/architecture.md`"
    )
