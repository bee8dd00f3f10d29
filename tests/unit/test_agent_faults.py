"""The agent's own faults (issue 15): a cycle that raises anything is logged and the agent goes
on; cycles failing MAX_FAILED_CYCLES in a row put the node FAULT (rule agent-fault: the VIP and
the service given up) until one succeeds again; a memory file that cannot be trusted keeps the
node FAULT, naming the file, without ever rewriting it, while its status stays served."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from esc.agent import loop
from esc.agent.history import History
from esc.agent.local_api import serve_unix
from esc.agent.loop import MAX_FAILED_CYCLES, Agent, Request
from esc.agent.memory import MEMORY_FILE, memory_text
from esc.cli.agent_cmd import run_status
from esc.config.schema import NodePaths, parse_config
from esc.core.facts import DecideConfig, unobserved
from esc.core.rules import RULES
from esc.drivers.fake import FakeDatabase
from esc.errors import DriverError
from esc.model import DbRole, Memory, NodeState, PeerView, ServiceView, VrrpState

ME, PEER = "esc-ha-0", "esc-ha-1"


class Vrrp:
    """keepalived as the agent sees it; ``raises``: what the next ``state()`` calls raise."""

    def __init__(self, state: VrrpState = VrrpState.BACKUP) -> None:
        self.vrrp = state
        self.gate_open = False
        self.raises: list[Exception] = []
        self.calls: list[str] = []

    def beat(self) -> None: ...
    def state(self) -> VrrpState:
        if self.raises:
            raise self.raises.pop(0)
        return self.vrrp

    def set_gate(self, open_: bool) -> None:
        self.calls.append(f"gate {'open' if open_ else 'closed'}")
        self.gate_open = open_

    def set_rank(self, rank: int) -> None: ...
    def start(self) -> None:
        self.calls.append("start")

    def stop(self) -> None: ...


class Vip:
    def __init__(self, held: bool) -> None:
        self.held = held

    def is_held(self) -> bool:
        return self.held

    def remove(self) -> None:
        self.held = False


class Service:
    def __init__(self, active: bool) -> None:
        self.active = active
        self.until: float | None = None  # the manager's lease (quorum mode only)

    def ensure_running(self) -> None: ...
    def observe(self) -> ServiceView:
        return ServiceView(active=self.active, healthy=True)

    def activate(self, primary: str) -> None:
        # as esc.agent.service passes its last lease on: the manager refuses one that is over
        if self.until is not None:
            raise DriverError("escmanager /control/activate: 503 the agent's lease is over")
        self.active = True

    def deactivate(self, primary: str | None) -> None:
        self.active = False

    def lease(self, until: float | None) -> None:
        self.until = until


class Peer:
    def current(self) -> PeerView:
        return PeerView(False, silent_for=10.0)


class Wake:
    """agent.wake: never waits (each cycle's wait is counted)."""

    def __init__(self) -> None:
        self.waits = 0

    def wait(self, _timeout: float) -> bool:
        self.waits += 1
        return True

    def set(self) -> None: ...
    def clear(self) -> None: ...


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        self.t += 0.5
        return self.t


@pytest.fixture
def paths() -> Iterator[NodePaths]:
    with tempfile.TemporaryDirectory(prefix="esc", dir="/tmp") as d:  # (a short socket path)
        p = NodePaths(Path(d))
        for sub in p.all_dirs():
            sub.mkdir(parents=True)
        yield p


def _agent(
    paths: NodePaths,
    *,
    vrrp: VrrpState = VrrpState.BACKUP,
    role: DbRole = DbRole.STANDBY,
    held: bool = False,
    active: bool = False,
) -> tuple[Agent, Vrrp, Vip, Service, FakeDatabase]:
    cfg = parse_config(
        {"ha": {"ha_node_list": ["192.0.2.10", "192.0.2.11"], "kad_vip": "192.0.2.100",
                "kad_vif": "eth0"}}
    )  # fmt: skip
    v, vip, svc, db = Vrrp(vrrp), Vip(held), Service(active), FakeDatabase(ME, role)
    agent = Agent(
        cfg=cfg,
        paths=paths,
        dcfg=DecideConfig(node_name=ME, peer_name=PEER, first_node=True),
        peer_host="192.0.2.11",
        vrrp=v,
        vip=vip,
        db=db,
        service=svc,
        peer=Peer(),
        gateway=None,
        history=History(paths.data_dir / "history.jsonl"),
        clock=Clock(),
    )
    return agent, v, vip, svc, db


def _state(paths: NodePaths) -> str:
    return paths.state_file.read_text().strip()


# --- any exception in a cycle ----------------------------------------------------------------


def test_a_cycle_raising_anything_is_logged_with_its_traceback_and_the_agent_goes_on(
    paths: NodePaths, caplog: pytest.LogCaptureFixture
) -> None:
    agent, v, *_ = _agent(paths)
    assert agent.guarded_cycle() is not None  # a first good cycle: a standby
    state = _state(paths)
    v.raises = [ValueError("bad keepalived line"), KeyError("role")]
    with caplog.at_level(logging.ERROR, logger="esc.agent"):
        assert agent.guarded_cycle() is None
        assert agent.guarded_cycle() is None
    failed = [r for r in caplog.records if r.getMessage().startswith("cycle failed")]
    assert [r.exc_info[0] for r in failed if r.exc_info] == [ValueError, KeyError]
    assert "(2 in a row): KeyError: 'role'" in failed[1].getMessage()
    assert _state(paths) == state  # fewer than MAX_FAILED_CYCLES: no FAULT yet
    assert agent.guarded_cycle() is not None and agent.failed_cycles == 0  # a good one resets


def test_run_survives_exceptions_until_stopped(
    paths: NodePaths, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loop itself: failing cycles neither end run() nor stop it from cycling."""
    agent, v, *_ = _agent(paths)
    monkeypatch.setattr(loop, "apply_routes", lambda routes: [])  # (no `ip route` here)
    seen: list[int] = []

    def state() -> VrrpState:
        seen.append(agent.failed_cycles)
        if len(seen) == 8:
            agent._stop.set()
        raise (ValueError if len(seen) % 2 else KeyError)("boom")

    v.state = state  # type: ignore[method-assign]
    agent.wake = Wake()  # type: ignore[assignment]
    agent.run()
    # every cycle waited: a FAULT decided blind (VIP and service given up, actions that would
    # run the next cycle at once) does not hurry a failing agent into a busy loop
    assert agent.wake.waits == 6  # type: ignore[attr-defined]
    # each failure counted; from the fifth on, the FAULT cycle looks again (and fails too)
    assert seen == [*range(MAX_FAILED_CYCLES + 1), MAX_FAILED_CYCLES, MAX_FAILED_CYCLES + 1]
    assert agent.failed_cycles == MAX_FAILED_CYCLES + 1
    assert _state(paths) == "FAULT"


def test_cycles_failing_in_a_row_mean_fault_naming_the_exception_then_a_good_one_recovers(
    paths: NodePaths,
) -> None:
    agent, v, vip, svc, db = _agent(paths, vrrp=VrrpState.MASTER, role=DbRole.PRIMARY, held=True)
    agent.mem = Memory(state=NodeState.MASTER, peer_seen=True, served_timeline=1)
    svc.active = True
    v.raises = [ValueError(f"garbage {i}") for i in range(MAX_FAILED_CYCLES)]
    for _ in range(MAX_FAILED_CYCLES - 1):
        assert agent.guarded_cycle() is None
    assert vip.held and svc.active  # a few failures: retried, nothing given up yet
    d = agent.guarded_cycle()
    assert d is not None and d.rule_id == "agent-fault" and d.next_state is NodeState.FAULT
    assert f"{MAX_FAILED_CYCLES} cycles failed in a row" in d.reason
    assert "ValueError: garbage 4" in d.reason
    assert _state(paths) == "FAULT"
    assert not vip.held and not svc.active and v.calls[-1] == "gate closed"
    assert not d.campaign and not d.announce
    assert agent.history.last(1)[0]["to"] == "FAULT"
    st = agent.handle_local("GET", "/status", {})[1]
    assert st["state"] == "FAULT" and "ValueError: garbage 4" in st["reason"]
    # It can observe again: FAULT once more while the rules are tried without the fault...
    d = agent.guarded_cycle()
    assert d is not None and d.rule_id == "agent-fault" and agent.failed_cycles == 0
    # ...then the rules as before the fault: a primary that served, keepalived MASTER
    d = agent.guarded_cycle()
    assert d is not None and d.rule_id != "agent-fault" and agent.fault() is None
    assert "promote" not in db.calls
    # serving again: two-node mode puts no lease on the manager, so the fault left none
    # ended behind that would refuse the activation (a full disk's agent, issue 16)
    assert svc.active and svc.until is None


def test_a_fault_cycle_that_cannot_observe_assumes_the_worst(paths: NodePaths) -> None:
    agent, v, vip, svc, _ = _agent(paths, held=True, active=True)
    v.raises = [OSError("no fifo")] * (2 * MAX_FAILED_CYCLES)
    for _ in range(MAX_FAILED_CYCLES - 1):
        agent.guarded_cycle()
    req = Request("switchover")
    agent.requests.put(req)
    d = agent.guarded_cycle()
    assert req.done.is_set() and not req.ok and "switchover refused" in req.message
    assert d is not None and d.rule_id == "agent-fault"
    assert "OSError: no fifo" in d.reason
    assert not vip.held and not svc.active  # given up although not seen
    code, st = agent.handle_local("GET", "/status", {})  # still served, saying why
    assert code == 200 and st["state"] == "FAULT" and "OSError: no fifo" in st["reason"]
    obs = agent.last_obs
    assert obs is not None and obs == unobserved(obs.now, obs.wall, agent.fault() or "")


def test_agent_fault_is_the_first_rule_of_every_mode() -> None:
    assert {mode: rules[0].id for mode, rules in RULES.items()} == dict.fromkeys(
        RULES, "agent-fault"
    )


# --- a memory file that cannot be trusted -----------------------------------------------------


def test_a_corrupt_memory_file_keeps_the_node_fault_naming_it_never_rewritten(
    paths: NodePaths, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An outdated standby's memory, torn. The agent starts (its status served), stays FAULT
    with the reason naming the file, never promotes nor holds the VIP, refuses force-primary,
    and never writes over the file (the outdated mark would be lost)."""
    memory = paths.data_dir / MEMORY_FILE
    memory.write_text(memory_text(Memory(self_outdated_from=0x3000060))[:30])
    before = memory.read_bytes()
    # keepalived MASTER, the database primary, the peer silent: would serve without the fault
    agent, v, vip, svc, db = _agent(
        paths, vrrp=VrrpState.MASTER, role=DbRole.PRIMARY, held=True, active=True
    )
    monkeypatch.setattr(loop, "apply_routes", lambda routes: [])
    agent._stop.set()
    agent.run()  # (stopped at once: writes the state file, starts keepalived)
    assert _state(paths) == "FAULT"
    req = Request("force-primary")
    agent.requests.put(req)
    for _ in range(4):
        d = agent.cycle()
        assert d.rule_id == "agent-fault" and d.next_state is NodeState.FAULT
        assert not d.campaign and not d.announce
    assert f"{memory}: not valid JSON" in d.reason and "remove it only if" in d.reason
    assert not req.ok and "force-primary refused" in req.message
    assert _state(paths) == "FAULT"
    assert not vip.held and not svc.active and not v.gate_open
    assert "promote" not in db.calls
    assert memory.read_bytes() == before
    srv = serve_unix(paths.run_dir / "agent.sock", agent.handle_local)
    try:
        capsys.readouterr()
        run_status(paths, as_json=False)
    finally:
        srv.shutdown()
        srv.server_close()
    out = capsys.readouterr().out
    assert out.startswith(f"FAULT  agent fault: {memory}: not valid JSON")
    assert "[rule agent-fault]" in out


def test_unobserved_gives_up_what_it_cannot_see() -> None:
    obs = unobserved(1.0, 2.0, "why")
    assert obs.vip_held and obs.service.active and not obs.peer.reachable and obs.fault == "why"
