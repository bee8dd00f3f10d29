"""The pair: two nodes, the network between them, the client; a schedule applied to it; the
invariants checked while it runs. ``run(schedule)`` is the whole simulation of one schedule.
"""

from __future__ import annotations

import functools
import os
import random
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from esc.config.schema import EscConfig, parse_config
from esc.errors import IllegalTransition
from esc.model import DbRole, NodeState, VrrpState

from .client import Ack, Client
from .clock import Sim, SimError
from .db import Cluster
from .invariants import (
    CONVERGE_S,
    STABLE_S,
    Checker,
    LostAckedWrites,
    NoConvergence,
    TimelineReused,
    Violation,
)
from .network import KINDS, Network, links
from .node import Node
from .schedule import Fault, Schedule

BOOT_LIMIT_S = 20.0
TRACE_SHOWN = 160


@functools.cache
def config(policy: str) -> EscConfig:
    return parse_config(
        {
            "ha": {
                "ha_node_list": ["192.0.2.10", "192.0.2.11"],
                "kad_vip": "192.0.2.100",
                "kad_vif": "eth0",
            },
            "replication": {"on_standby_loss": policy},
            "agent": {"peer_secret": "sim"},
        }
    )


def scratch_root() -> Path:
    """Node roots on tmpfs: the agents write their state file and memory for real."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    return Path(tempfile.mkdtemp(prefix="esc-sim-", dir=base))


@dataclass
class Result:
    schedule: Schedule
    trace: list[tuple[float, str, str]]
    acks: list[Ack]
    master: str
    converged_after: float  # seconds after the last heal
    cycles_after: int  # agent cycles (both nodes) after the last heal
    allowed: list[Ack] = field(default_factory=list)  # lost as policy available reports


class World:
    def __init__(self, schedule: Schedule, root: Path) -> None:
        self.schedule = schedule
        self.sim = Sim()
        self.net = Network()
        self.cluster = Cluster(self.sim, self.net)
        self.rng = random.Random(schedule.seed)
        self.lines: list[tuple[float, str, str]] = []
        cfg = config(schedule.policy)
        self.nodes = [Node(self, i, cfg, root, schedule.systemd) for i in (0, 1)]
        # Since when each node's agent could reach its peer's (the peer API answering): an
        # acknowledgement is judged by how long the acknowledging agent could have known.
        self.visible_since: dict[str, float | None] = {n.name: 0.0 for n in self.nodes}
        self.net.listeners.append(self.reachability_changed)
        self.client = Client(self, schedule.write_interval)
        self.checker = Checker(self)
        self._watch = False
        self._since: float | None = None
        self.why_not = "not checked yet"

    def trace(self, who: str, text: str) -> None:
        self.lines.append((self.sim.now, who, text))

    # --- hooks ----------------------------------------------------------------------------

    def reachability_changed(self) -> None:
        """Called on every change that can make a peer API answer or stop answering: the
        network, a host's power, an agent started, ended, frozen or resumed."""
        for n in self.nodes:
            ok = n.peer_api()[0] == "ok"
            if not ok:
                self.visible_since[n.name] = None
            elif self.visible_since[n.name] is None:
                self.visible_since[n.name] = self.sim.now

    def peer_visible_for(self, node: Node) -> float:
        """Seconds the peer API of ``node``'s peer has answered ``node`` without a break."""
        since = self.visible_since[node.name]
        return 0.0 if since is None else self.sim.now - since

    def on_ack(self, ack: Ack) -> None:
        self.checker.on_ack(ack)

    def after_cycle(self, node: Node, t0: float) -> None:
        if self.cluster.reused:
            raise TimelineReused(self.cluster.reused[0])
        if self.cluster.anomalies:
            raise SimError(f"model anomaly: {self.cluster.anomalies[0]}")
        self.checker.after_cycle(node, t0)
        if self._watch:
            why = self.converged()
            if why is None:
                if self._since is None:
                    self._since = self.sim.now
            else:
                self._since, self.why_not = None, why

    def converged(self) -> str | None:
        """None when the pair is one serving MASTER and one synchronous, streaming BACKUP."""
        states = [n.state_file() for n in self.nodes]
        if sorted(states) != ["BACKUP", "MASTER"]:
            return f"states {states}"
        m, b = (self.nodes[0], self.nodes[1]) if states[0] == "MASTER" else self.nodes[::-1]
        k = m.keepalived
        if k is None or not k.alive or k.state is not VrrpState.MASTER or not m.vip:
            return f"{m.name}: keepalived {k.state.value if k else 'gone'}, VIP {m.vip}"
        if m.pg.role is not DbRole.PRIMARY or m.manager is None or not m.manager.active:
            return f"{m.name}: database {m.pg.role.value}, service not active"
        if not m.routed:
            return f"{m.name}: route not announced"
        r = b.pg.recv
        if b.pg.role is not DbRole.STANDBY or r is None or not r.alive or r.source is not m.pg:
            return f"{b.name}: database {b.pg.role.value}, not streaming from {m.name}"
        if b.pg.tip is not m.pg.tip:
            return f"{b.name}: not caught up"
        if m.pg.status().sync_standby != b.name:
            return f"{m.name}: {b.name} is not its synchronous standby"
        if b.vip or b.routed or (b.manager is not None and b.manager.active):
            return f"{b.name}: holds the VIP, the route or an active service"
        if self.client.target != m.name:
            return f"the client follows {self.client.target}"
        return None

    def _run_watching(self, limit: float, stable: float = STABLE_S) -> bool:
        """Run until converged and stable for ``stable`` seconds, or until ``limit``."""
        self._watch, self._since = True, None
        sim = self.sim
        while sim.now < limit:
            if self._since is not None and sim.now - self._since >= stable:
                self._watch = False
                return True
            if not sim.step():
                break
        self._watch = False
        return False

    # --- faults ---------------------------------------------------------------------------

    def _node(self, f: Fault) -> Node:
        if f.node >= 0:
            return self.nodes[f.node]
        return next((n for n in self.nodes if n.state_file() == "MASTER"), self.nodes[0])

    def apply(self, key: int, f: Fault) -> Callable[[], None] | None:
        """Start fault ``f``; return what ends it (None: nothing to end)."""
        self.trace("fault", str(f))
        a, b = (n.name for n in self.nodes)
        if f.kind == "partition":
            kinds = KINDS if f.what == "all" else tuple(f.what.split(","))
            self.net.partition(key, links(a, b, kinds, f.direction))

            def heal() -> None:
                self.trace("fault", f"heal: {f}")
                self.net.heal(key)

            return heal
        node = self._node(f)
        if f.kind == "switchover":
            node.request("switchover")
            return None
        if f.kind == "reboot":
            node.power_off()
            return node.power_on
        if f.kind == "pause":
            node.freeze(f.what)
            return lambda: node.thaw(f.what)
        if f.kind == "kill":
            node.kill(f.what)
            return node.start_agent if f.what == "agent" else None
        raise ValueError(f"unknown fault {f.kind!r}")

    def heal_all(self) -> None:
        self.trace("fault", "heal everything")
        self.net.heal()
        for n in self.nodes:
            n.thaw_all()
            n.power_on()
            n.start_agent()

    # --- one run --------------------------------------------------------------------------

    def first_boot(self) -> None:
        """Both nodes boot with empty data directories: initdb on esc-ha-0, a clone on
        esc-ha-1, the first election."""
        for n in self.nodes:
            self.sim.at(self.rng.uniform(0.0, 0.5), n.start_agent)
        self.client.start(self.rng.uniform(0.0, 0.5))

    def warm_start(self) -> None:
        """The pair as its first boot leaves it, built directly (the boot takes a third of a
        short schedule): esc-ha-0 MASTER (primary, VIP, active service) and esc-ha-1 BACKUP
        streaming synchronously; then the agents' real cycles take over, and the pair must
        still pass the convergence check before any fault."""
        a, b = self.nodes
        a.pg.initdb()
        b.pg.tip = a.pg.tip
        b.pg.standby_mode, b.pg.source = True, a.name
        b.pg.start()
        self.cluster.connect(b.pg, a.pg)
        for n in self.nodes:
            n.start_manager()
            assert n.manager is not None
            n.manager.ready_at = self.sim.now
        assert a.manager is not None
        a.manager.active = True
        a.start_agent(warm=NodeState.MASTER)
        b.start_agent(warm=NodeState.BACKUP)
        self.client.target = a.name
        self.client.start(self.rng.uniform(0.0, 0.2))

    def run(self) -> Result:
        sim = self.sim
        if self.schedule.first_boot:
            self.first_boot()
        else:
            self.warm_start()
        # The warm start is built converged: two cycles of each agent confirm it.
        ready = STABLE_S if self.schedule.first_boot else 2 * self.nodes[0].cfg.agent.cycle_s
        if not self._run_watching(BOOT_LIMIT_S, ready):
            raise NoConvergence(f"the pair did not boot in {BOOT_LIMIT_S:.0f}s: {self.why_not}")
        t = sim.now + self.rng.uniform(0.0, 0.2)
        end = t
        for key, step in enumerate(self.schedule.steps):
            t += step.gap
            sim.run_until(t)
            undo = self.apply(key, step.fault)
            stop = t + max(step.fault.duration, 0.0)
            if undo is not None:
                sim.at(stop, undo)
            end = max(end, stop)
        sim.run_until(end)
        self.heal_all()
        healed, cycles = sim.now, sum(n.cycles for n in self.nodes)
        if not self._run_watching(healed + CONVERGE_S):
            raise NoConvergence(
                f"no convergence within {CONVERGE_S:.0f}s "
                f"({CONVERGE_S / self.nodes[0].cfg.agent.cycle_s:.0f} cycles) of the last "
                f"heal at {healed:.3f}: {self.why_not}"
            )
        master = next(n for n in self.nodes if n.state_file() == "MASTER")
        bad, allowed = self.checker.lost_writes(master)
        if bad:
            raise LostAckedWrites(
                f"{len(bad)} acknowledged write(s) missing on {master.name}, which serves: "
                + "; ".join(str(a) for a in bad[:5])
            )
        return Result(
            self.schedule,
            self.lines,
            self.client.acks,
            master.name,
            converged_after=sim.now - healed,
            cycles_after=sum(n.cycles for n in self.nodes) - cycles,
            allowed=allowed,
        )


def run(schedule: Schedule, root: Path | None = None) -> Result:
    """Simulate one schedule; raise a :class:`Violation` (with the trace) if an invariant
    breaks. ``IllegalTransition`` escaping ``decide()`` counts as one."""
    own = root is None
    base = scratch_root() if root is None else root
    world = World(schedule, base)
    try:
        return world.run()
    except Violation as exc:
        raise type(exc)(report(world, str(exc))) from None
    except IllegalTransition as exc:
        raise Violation(report(world, f"decide() raised {exc}")) from None
    except SimError as exc:
        raise SimError(report(world, f"the simulation failed: {exc}")) from None
    finally:
        if own:
            shutil.rmtree(base, ignore_errors=True)


def report(world: World, what: str) -> str:
    """The failure message: what broke, the schedule, its replay line, the trace (its last
    TRACE_SHOWN lines; all of them with SIM_TRACE=1)."""
    lines = world.lines if os.environ.get("SIM_TRACE") else world.lines[-TRACE_SHOWN:]
    skipped = len(world.lines) - len(lines)
    body = "\n".join(f"{t:9.3f} {who:9} {text}" for t, who, text in lines)
    return (
        f"{what}\n\nschedule: {world.schedule.describe()}\n"
        f"replay: SIM_REPLAY='{world.schedule.to_json()}' "
        ".venv/bin/pytest -q tests/sim/test_replay.py"
        "\n\n"
        f"trace ({skipped} earlier lines not shown):\n{body}"
    )
