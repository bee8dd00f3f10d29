"""One simulated node: its processes (agent, keepalived, PostgreSQL, esc-manager, ExaBGP),
their faults (kill, freeze, power cut) and the agent's loop timing (agent/loop.py's ``run``).

Process tree as on a real node: keepalived and esc-manager are the agent's children with a
parent-death SIGTERM (keepalived then sends a priority-0 advert and drops the VIP), ExaBGP
dies with a SIGKILL (the router drops the route). PostgreSQL survives its agent (the lab), or
goes with it (``systemd``: the unit's cgroup). A freeze (SIGSTOP) applies to a process slot
for its duration (a process restarted meanwhile is frozen too). A power cut kills everything
without a word on the wire, empties ``<run>`` and keeps ``<data>``.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from esc.agent.loop import MAX_BACK_TO_BACK, Agent, Request, hurried
from esc.config.schema import EscConfig, NodePaths, write_atomic
from esc.core.facts import DecideConfig
from esc.drivers.fake import FakeBgp
from esc.errors import EscError, IllegalTransition
from esc.model import Decision, NodeState, VrrpState

from .agent import SimHistory, SimPeerPoller, SimVip
from .clock import Timer
from .db import Postgres
from .manager import Manager, SimService
from .pgdriver import SimDatabase
from .vrrp import FIFO_DELAY, Keepalived, SimVrrp

if TYPE_CHECKING:
    from .pair import World

CYCLE_COST = 0.001  # one cycle's own time (the status query, ip addr, ...)
COMPONENTS = ("agent", "keepalived", "postgres", "manager")


class AgentGone(BaseException):
    """The agent was killed while stuck in a driver call: unwinds its cycle."""


class Node:
    def __init__(
        self,
        world: World,
        index: int,
        cfg: EscConfig,
        root: Path,
        systemd: bool,
    ) -> None:
        assert cfg.ha is not None
        self.world = world
        self.sim = world.sim
        self.net = world.net
        self.index = index
        self.cfg = cfg
        ha = cfg.ha
        self.name, self.peer_name = ha.node_names[index], ha.node_names[1 - index]
        self.addr, self.peer_addr = str(ha.ha_node_list[index]), str(ha.ha_node_list[1 - index])
        self.priority = 101 if index == 0 else 100  # keepalived_conf.peer_of
        self.systemd = systemd
        self.paths = NodePaths(root / self.name)
        self.dcfg = DecideConfig(  # as build_agent makes it
            node_name=self.name,
            peer_name=self.peer_name,
            first_node=index == 0,
            policy=cfg.replication.on_standby_loss,
            standby_loss_grace_s=cfg.replication.standby_loss_grace_s,
            health_failures=cfg.agent.health_failures,
            peer_agent_timeout_s=cfg.agent.heartbeat_timeout_s,
            gateway=None,
            mode="replicated",
        )
        self.peer_timeout = min(cfg.agent.peer_timeout_s, 2 * ha.advert_int)
        self.vip = False
        self.host_up = True
        self.frozen: dict[str, int] = dict.fromkeys(COMPONENTS, 0)
        self.heartbeat = -1e9
        self.gate = ""
        self.rank = ""
        sync = f'FIRST 1 ("{min(ha.node_names)}", "{max(ha.node_names)}")'
        self.pg = Postgres(world.cluster, self, sync)
        self.keepalived: Keepalived | None = None
        self.manager: Manager | None = None
        self.agent: Agent | None = None
        self.inc = 0
        self._vrrp: SimVrrp | None = None
        self.service: SimService | None = None
        self.poller: SimPeerPoller | None = None
        self.bgp = FakeBgp()
        self.requests: list[Request] = []
        self.cycle = Timer(self.sim, self._cycle)
        self.in_cycle = self.waiting = self.wake_pending = self.missed_cycle = False
        self.b2b = 0
        self.cycles = 0
        self.last_reason = ""
        self.last_state = NodeState.STOP
        self._state_key: tuple[int, Any] | None = None
        self._state_text = ""

    def trace(self, text: str) -> None:
        self.world.trace(self.name, text)

    # --- what other parts ask -----------------------------------------------------------

    def agent_frozen(self) -> bool:
        return self.frozen["agent"] > 0

    def keepalived_frozen(self) -> bool:
        return self.frozen["keepalived"] > 0

    def pg_frozen(self) -> bool:
        return self.frozen["postgres"] > 0

    def manager_frozen(self) -> bool:
        return self.frozen["manager"] > 0

    @property
    def peer(self) -> Node:
        return self.world.nodes[1 - self.index]

    @property
    def routed(self) -> bool:
        return self.bgp.routed

    def state_file(self) -> str:
        """What ``<run>/keepalived_state`` says (re-read whenever the agent may have changed it)."""
        key = (self.inc, self.agent.mem.state if self.agent else None)
        if key != self._state_key:
            try:
                self._state_text = self.paths.state_file.read_text().strip()
            except FileNotFoundError:
                self._state_text = ""
            self._state_key = key
        return self._state_text

    # keepalived's host
    def gate_text(self) -> str:
        return self.gate

    def write_gate(self, text: str) -> None:
        self.gate = text

    def rank_text(self) -> str:
        return self.rank

    def write_rank(self, text: str) -> None:
        self.rank = text

    def heartbeat_age(self) -> float:
        return self.sim.now - self.heartbeat

    def beat(self) -> None:
        self.heartbeat = self.sim.now

    def peer_keepalived(self) -> Keepalived | None:
        k = self.peer.keepalived
        return k if k is not None and k.alive and self.peer.host_up else None

    def notify(self, state: VrrpState) -> None:
        driver, inc = self._vrrp, self.inc
        if driver is not None:
            self.sim.after(FIFO_DELAY, lambda: driver.fifo(state) if self.inc == inc else None)

    def garp(self) -> None:
        self.world.client.garp(self.name)

    def spawn_keepalived(self, driver: SimVrrp, warm: VrrpState | None = None) -> Keepalived:
        assert self.cfg.ha is not None
        self._vrrp = driver
        self.keepalived = Keepalived(
            self.sim,
            self.net,
            self,
            self.priority,
            self.cfg.ha.advert_int,
            self.cfg.agent.heartbeat_timeout_s,
            warm,
        )
        return self.keepalived

    # the poller's transport
    def peer_api(self) -> tuple[str, dict[str, Any] | None]:
        p = self.peer
        if not self.net.both(self.name, p.name, "api") or not p.host_up:
            return "hang", None
        if p.agent is None:
            return "refused", None
        if p.agent_frozen():
            return "hang", None
        return "ok", p.agent.published.view

    # esc-manager
    def start_manager(self) -> None:
        self.manager = Manager(self.sim, self)

    def stop_manager(self) -> None:
        if self.manager is not None:
            self.manager.alive = self.manager.active = False

    # --- the agent ----------------------------------------------------------------------

    def start_agent(self, warm: NodeState | None = None) -> None:
        """Start the agent as systemd or the lab does. ``warm``: the warm start (pair.py),
        an agent that already is MASTER or BACKUP, with keepalived elected accordingly."""
        if self.agent is not None or not self.host_up:
            return
        self.inc += 1
        self._vrrp = SimVrrp(self)
        self.service = SimService(self.sim, self)
        self.poller = SimPeerPoller(
            self.sim,
            self,
            host=self.peer_addr,
            port=self.cfg.agent.peer_port,
            secret="sim",
            interval=min(0.1, self.cfg.agent.cycle_s, self.peer_timeout / 2),
            timeout=self.peer_timeout,
            on_change=self.wake,
            self_name=self.name,
            peer_name=self.peer_name,
        )
        self.bgp = FakeBgp()
        self.agent = Agent(
            cfg=self.cfg,
            paths=self.paths,
            dcfg=self.dcfg,
            peer_host=self.peer_addr,
            vrrp=self._vrrp,
            vip=SimVip(self),
            db=SimDatabase(self.pg, self),
            service=self.service,
            peer=self.poller,
            gateway=None,
            history=SimHistory(self.trace),
            bgp=self.bgp,
            clock=lambda: self.sim.now,
        )
        if warm is not None:
            self.agent.mem = replace(self.agent.mem, state=warm, peer_seen=True)
            self.service.warm(self.manager is not None and self.manager.active)
        self.last_state, self.last_reason = self.agent.mem.state, ""
        self.trace(f"agent started (memory: {self.agent.mem})")
        # Agent.start() starts the poller and the health checks (build_agent's starters; the
        # APIs are the simulated network's); run() writes the state file
        # and starts keepalived (ha.routes: none configured) before its first cycle.
        self.poller.start()
        self.service.start_checks()
        write_atomic(self.paths.state_file, self.agent.mem.state.value + "\n")
        vrrp_warm = {NodeState.MASTER: VrrpState.MASTER, NodeState.BACKUP: VrrpState.BACKUP}
        self._vrrp.start(vrrp_warm.get(warm) if warm is not None else None)
        self.b2b = 0
        self.in_cycle = self.waiting = self.wake_pending = self.missed_cycle = False
        self.cycle.set(self.sim.now + CYCLE_COST)
        self.world.reachability_changed()

    def _end_agent(self) -> None:
        self.agent = None
        self.world.reachability_changed()
        self.inc += 1
        self.cycle.cancel()
        self.in_cycle = self.waiting = False
        if self.poller is not None:
            self.poller.dead = True
        if self.service is not None:
            self.service.stopped = True
            self.service.check.cancel()
        self._vrrp = None

    def kill_agent(self) -> None:
        """SIGKILL: the children go with it (module docstring)."""
        if self.agent is None:
            return
        self.trace("agent killed")
        self._end_agent()
        if self.keepalived is not None and self.keepalived.alive:
            self.keepalived.stop()
        self.stop_manager()
        self.bgp.crash()
        if self.systemd:
            self.pg.stop()

    def kill(self, what: str) -> None:
        if what == "agent":
            self.kill_agent()
        elif what == "keepalived" and self.keepalived is not None:
            self.trace("keepalived killed")
            self.keepalived.kill()
        elif what == "postgres":
            self.pg.stop(clean=False)
        elif what == "manager":
            self.trace("esc-manager killed")
            self.stop_manager()

    def power_off(self) -> None:
        self.trace("power off")
        self._end_agent()
        self.host_up = False
        if self.keepalived is not None:
            self.keepalived.kill()
        self.vip = False
        self.stop_manager()
        self.bgp.crash()
        self.pg.stop(clean=False)
        self.frozen = dict.fromkeys(COMPONENTS, 0)
        shutil.rmtree(self.paths.run_dir, ignore_errors=True)
        self.gate = self.rank = ""
        self.world.cluster.refresh()
        self.world.reachability_changed()

    def power_on(self) -> None:
        if self.host_up:
            return
        self.trace("power on")
        self.host_up = True
        self.world.cluster.refresh()
        self.world.reachability_changed()
        self.start_agent()

    def freeze(self, what: str) -> None:
        comps = COMPONENTS if what == "node" else (what,)
        for c in comps:
            self.frozen[c] += 1
        self.trace(f"frozen: {', '.join(comps)}")
        self.world.cluster.refresh()
        self.world.reachability_changed()

    def thaw(self, what: str) -> None:
        comps = COMPONENTS if what == "node" else (what,)
        for c in comps:
            self.frozen[c] = max(0, self.frozen[c] - 1)
        self.trace(f"resumed: {', '.join(comps)}")
        self._resumed()

    def thaw_all(self) -> None:
        if any(self.frozen.values()):
            self.frozen = dict.fromkeys(COMPONENTS, 0)
            self.trace("resumed: everything")
            self._resumed()

    def _resumed(self) -> None:
        self.world.cluster.refresh()
        self.world.reachability_changed()
        if self.service is not None and not self.manager_frozen():
            self.service.resumed()
        if self.keepalived is not None and not self.keepalived_frozen():
            self.keepalived.resume()
        if not self.agent_frozen():
            if self.poller is not None:
                self.poller.resume()
            if self.missed_cycle and self.agent is not None:
                self.missed_cycle = False
                self.cycle.set(self.sim.now + CYCLE_COST)

    def request(self, kind: str) -> None:
        if self.agent is None:
            self.trace(f"{kind} requested: no agent")
            return
        req = Request(kind, who="sim")
        self.requests.append(req)
        self.agent.requests.put(req)
        self.wake()

    # --- the loop (agent/loop.py's run) --------------------------------------------------

    def block(self, seconds: float, until: Callable[[], bool] | None = None) -> bool:
        """The agent is stuck in a call for ``seconds`` (or until ``until()``): True if
        ``until()`` ended it. Raises AgentGone if the agent was killed meanwhile."""
        inc = self.inc
        done = self.sim.block(
            seconds, stuck=lambda: self.inc == inc and self.agent_frozen(), until=until
        )
        if self.inc != inc:
            raise AgentGone
        return done

    def wake(self) -> None:
        if self.agent is None:
            return
        if self.in_cycle or not self.waiting:
            self.wake_pending = True
            return
        self.waiting = False
        self.cycle.set(self.sim.now + CYCLE_COST)

    def _cycle(self) -> None:
        agent = self.agent
        if agent is None:
            return
        if self.agent_frozen():
            self.missed_cycle = True
            return
        inc, t0 = self.inc, self.sim.now
        self.in_cycle, self.waiting = True, False
        d: Decision | None = None
        try:
            d = agent.cycle()
        except AgentGone:
            return
        except IllegalTransition:
            raise  # the real loop would log "cycle failed", retry, then go FAULT: a finding
        except (EscError, OSError) as exc:
            self.trace(f"cycle failed: {exc}")
        finally:
            self.in_cycle = False
        if self.inc != inc:
            return
        self.cycles += 1
        self._after(agent, d)
        self.world.after_cycle(self, t0)
        busy = hurried(d, agent.action_failed)
        if busy and self.b2b < MAX_BACK_TO_BACK:
            self.b2b += 1
            self.cycle.set(self.sim.now + CYCLE_COST)
            return
        self.b2b = 0
        if self.wake_pending:
            self.wake_pending = False
            self.cycle.set(self.sim.now + CYCLE_COST)
            return
        self.waiting = True
        self.cycle.set(max(t0 + self.cfg.agent.cycle_s, self.sim.now + CYCLE_COST))

    def _after(self, agent: Agent, d: Decision | None) -> None:
        if d is not None and (d.reason != self.last_reason or d.next_state != self.last_state):
            was = self.last_state
            head = f"{was.value} -> {d.next_state.value}" if was != d.next_state else was.value
            self.trace(f"{head}: {d.reason} [{', '.join(d.action_kinds)}]")
            self.last_reason, self.last_state = d.reason, d.next_state
        if agent.action_failed:
            self.trace("an action failed (retried next cycle)")
        for req in [r for r in self.requests if r.done.is_set()]:
            self.requests.remove(req)
            self.trace(f"{req.kind}: {req.message}")
