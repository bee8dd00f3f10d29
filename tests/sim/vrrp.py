"""keepalived as configured by drivers/keepalived_conf.py, and the agent's driver for it.

The model of one keepalived process (VRRPv3, ``state BACKUP``, ``nopreempt``, unicast to the
peer):

- a MASTER sends an advert every ``advert_int``; a BACKUP becomes MASTER when it has heard
  none for the master-down interval, 3 x advert_int + skew, skew = (256 - priority) / 256 x
  advert_int; an advert with priority 0 (a MASTER leaving) cuts that to the skew;
- nopreempt: a BACKUP accepts any MASTER, whatever its priority;
- two MASTERs (a healed partition): the one that hears a higher priority goes BACKUP; the one
  that hears a lower priority answers with an advert and a gratuitous ARP
  (``vrrp_garp_lower_prio_repeat``), which the client follows;
- becoming MASTER adds the VIP and sends a gratuitous ARP, and a second one after
  ``vrrp_garp_master_delay`` (1 s) if still MASTER; leaving MASTER removes the VIP; leaving
  for FAULT or STOP sends a priority-0 advert first;
- FAULT while the track file (the gate) holds anything but 0, or while the agent-alive script
  fails (heartbeat older than ``heartbeat_timeout_s``, checked every second, fall 1, rise 1);
  leaving FAULT goes to BACKUP; ``init_file 1 overwrite`` closes the gate at start;
- a weighted track file (the data rank, ``Vrrp.set_rank``): its number times the weight (1)
  is added to the configured priority (1..254; 0 or less is FAULT), for the adverts, the
  master-down skew and the comparison of two MASTERs; ``init_file 0 overwrite`` at start;
- every transition is written to the notify FIFO, which the agent's driver reads.

A SIGKILLed keepalived leaves the VIP on the interface (the next one releases it when it
starts); a frozen one neither sends nor hears.
"""

from __future__ import annotations

from typing import Protocol

from esc.config.schema import EscConfig
from esc.model import VrrpState

from .clock import Sim, Timer
from .network import Network

V = VrrpState
LATENCY = 0.0005  # one packet on the sync network
GATE_DELAY = 0.005  # keepalived sees a rewritten track file (inotify)
FIFO_DELAY = 0.001  # a notify line reaches the agent's reader thread
GARP_MASTER_DELAY = 1.0  # vrrp_garp_master_delay 1
SCRIPT_INTERVAL = 1.0  # vrrp_script esc_agent_alive: interval 1


class Host(Protocol):
    """What a keepalived process sees of its node."""

    name: str
    addr: str
    vip: bool  # the kernel holds the VIP

    def gate_text(self) -> str: ...

    def write_gate(self, text: str) -> None: ...

    def rank_text(self) -> str: ...

    def write_rank(self, text: str) -> None: ...

    def heartbeat_age(self) -> float: ...

    def keepalived_frozen(self) -> bool: ...

    def peer_keepalived(self) -> Keepalived | None: ...

    def notify(self, state: VrrpState) -> None: ...

    def garp(self) -> None: ...

    def trace(self, text: str) -> None: ...


class Keepalived:
    def __init__(
        self,
        sim: Sim,
        net: Network,
        host: Host,
        priority: int,
        advert_int: float,
        heartbeat_timeout: float,
        warm: VrrpState | None = None,
    ) -> None:
        self.sim = sim
        self.net = net
        self.host = host
        self.base_priority = priority
        self.advert_int = advert_int
        self.heartbeat_timeout = heartbeat_timeout
        self.rank = 0
        self._set_priority(priority)
        self.state = V.INIT
        self.alive = True
        self.gate = "1"
        self.script_ok = True
        self.started = sim.now
        self._missed: set[str] = set()  # timers that fired while frozen
        self.advert = Timer(sim, lambda: self._timer("advert"))
        self.down = Timer(sim, lambda: self._timer("down"))
        self.garp2 = Timer(sim, lambda: self._timer("garp2"))
        self.script = Timer(sim, lambda: self._timer("script"))
        self.script.set(sim.now + SCRIPT_INTERVAL)
        host.write_rank("0\n")  # init_file 0 overwrite
        if warm is not None:  # the warm start (pair.py): already elected, gate open
            self.gate = "0"
            host.write_gate("0\n")
            self.state = warm
            if warm is V.MASTER:
                host.vip = True
                self.advert.set(sim.now + advert_int)
            else:
                self.down.set(sim.now + self.down_interval)
            return
        host.write_gate("1\n")  # init_file 1 overwrite
        if host.vip:  # a killed keepalived's VIP: released at start (vrrp_restore_interface)
            host.vip = False
            host.trace("keepalived: stale VIP released at start")
        self._evaluate()

    # --- process ------------------------------------------------------------------------

    def stop(self) -> None:
        """SIGTERM: release the VIP with a priority-0 advert, then exit."""
        if not self.alive:
            return
        if self.state is V.MASTER:
            self._send(0)
            self.host.vip = False
        self._set(V.STOP)
        self._die()

    def kill(self) -> None:
        """SIGKILL: gone at once, the VIP stays on the interface."""
        self._die()

    def _die(self) -> None:
        self.alive = False
        for t in (self.advert, self.down, self.garp2, self.script):
            t.cancel()

    def resume(self) -> None:
        missed, self._missed = self._missed, set()
        for name in sorted(missed):
            self._timer(name)

    # --- inputs -------------------------------------------------------------------------

    def _set_priority(self, prio: int) -> None:
        self.priority = prio
        self.skew = (256 - prio) / 256 * self.advert_int
        self.down_interval = 3 * self.advert_int + self.skew

    def gate_changed(self) -> None:
        self.sim.after(GATE_DELAY, self._read_gate)

    def rank_changed(self) -> None:
        self.sim.after(GATE_DELAY, self._read_rank)

    def _read_rank(self) -> None:
        if not self.alive:
            return
        if self.host.keepalived_frozen():
            self._missed.add("rank")
            return
        try:
            rank = int(self.host.rank_text().strip() or "0")
        except ValueError:
            rank = 0
        if rank == self.rank:
            return
        self.rank = rank
        prio = min(254, self.base_priority + rank)  # weight 1
        self.host.trace(f"keepalived: effective priority {prio} (rank {rank:+d})")
        self._set_priority(prio)
        self._evaluate()

    def _read_gate(self) -> None:
        if not self.alive:
            return
        if self.host.keepalived_frozen():
            self._missed.add("gate")
            return
        self.gate = self.host.gate_text().strip() or "0"
        self._evaluate()

    def receive(self, prio: int, sender: str) -> None:
        if not self.alive or self.host.keepalived_frozen():
            return
        if self.state is V.BACKUP:
            self.down.set(self.sim.now + (self.skew if prio == 0 else self.down_interval))
        elif self.state is V.MASTER:
            if prio == 0:
                self._send(self.priority)
            elif (prio, sender) > (self.priority, self.host.addr):
                self.host.trace(f"keepalived: advert with priority {prio} from {sender}")
                self.host.vip = False
                self.advert.cancel()
                self.garp2.cancel()
                self._set(V.BACKUP)
                self.down.set(self.sim.now + self.down_interval)
            else:
                self._send(self.priority)
                self.host.garp()  # vrrp_garp_lower_prio_repeat

    # --- timers -------------------------------------------------------------------------

    def _timer(self, name: str) -> None:
        if not self.alive:
            return
        if self.host.keepalived_frozen():
            self._missed.add(name)
            return
        if name == "gate":
            self._read_gate()
        elif name == "rank":
            self._read_rank()
        elif name == "advert" and self.state is V.MASTER:
            self._send(self.priority)
            self.advert.set(self.sim.now + self.advert_int)
        elif name == "down" and self.state is V.BACKUP:
            if self.down.deadline is None:
                self._to_master()
        elif name == "garp2" and self.state is V.MASTER:
            self.host.garp()
        elif name == "script":
            self._check_script()

    def _check_script(self) -> None:
        age = self.host.heartbeat_age()
        ok = -self.heartbeat_timeout <= age <= self.heartbeat_timeout
        if ok != self.script_ok:
            self.script_ok = ok
            self.host.trace(f"keepalived: agent-alive check {'passes' if ok else 'fails'}")
            self._evaluate()
        # The next check that can change anything: every second while failing; while passing,
        # the first tick after the heartbeat would be too old.
        k = int((self.sim.now - self.started) / SCRIPT_INTERVAL + 1e-9) + 1
        nxt = self.started + k * SCRIPT_INTERVAL
        if ok:
            stale_at = self.sim.now - age + self.heartbeat_timeout
            while nxt <= stale_at:
                nxt += SCRIPT_INTERVAL
        self.script.set(nxt)

    # --- transitions --------------------------------------------------------------------

    def _evaluate(self) -> None:
        fault = self.gate != "0" or not self.script_ok or self.priority <= 0
        if fault and self.state is not V.FAULT:
            if self.state is V.MASTER:
                self._send(0)
                self.host.vip = False
            for t in (self.advert, self.down, self.garp2):
                t.cancel()
            self._set(V.FAULT)
        elif not fault and self.state in (V.FAULT, V.INIT):
            self._set(V.BACKUP)
            self.down.set(self.sim.now + self.down_interval)

    def _to_master(self) -> None:
        self.host.vip = True
        self._set(V.MASTER)
        self._send(self.priority)
        self.host.garp()
        self.advert.set(self.sim.now + self.advert_int)
        self.garp2.set(self.sim.now + GARP_MASTER_DELAY)

    def _set(self, state: VrrpState) -> None:
        self.state = state
        self.host.trace(f"keepalived {state.value}")
        self.host.notify(state)

    def _send(self, prio: int) -> None:
        peer = self.host.peer_keepalived()
        if peer is None or not self.net.up(self.host.name, peer.host.name, "vrrp"):
            return
        addr = self.host.addr
        self.sim.after(LATENCY, lambda: peer.receive(prio, addr))


class SimVrrp:
    """The agent's keepalived driver (implements ``esc.drivers.base.Vrrp``), as
    drivers/keepalived.py behaves: the state comes from the FIFO, DEAD without a process, the
    gate is a file compared before writing, ``start`` is a no-op while keepalived runs."""

    def __init__(self, node: VrrpHost) -> None:
        self.node = node
        self.proc: Keepalived | None = None
        self._state = V.INIT
        self._gate_open: bool | None = None

    def start(self, warm: VrrpState | None = None) -> None:
        if self.proc is not None and self.proc.alive:
            return
        self.node.beat()
        self._gate_open = warm is not None
        self._state = V.INIT if warm is None else warm
        self.proc = self.node.spawn_keepalived(self, warm)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
        self._state = V.STOP

    def state(self) -> VrrpState:
        if self.proc is None or not self.proc.alive:
            return V.DEAD
        return self._state

    def set_gate(self, open_: bool) -> None:
        want = "0\n" if open_ else "1\n"
        if self.node.gate_text() != want:
            self.node.write_gate(want)
            if self.proc is not None and self.proc.alive:
                self.proc.gate_changed()
        self._gate_open = open_

    @property
    def gate_open(self) -> bool:
        return bool(self._gate_open)

    def set_rank(self, rank: int) -> None:
        """The weighted track file (keepalived adds it to the priority): written on change."""
        want = f"{rank}\n"
        if self.node.rank_text() != want:
            self.node.write_rank(want)
            if self.proc is not None and self.proc.alive:
                self.proc.rank_changed()

    def beat(self) -> None:
        self.node.beat()

    def reload(self, cfg: EscConfig) -> bool:
        return False

    def fifo(self, state: VrrpState) -> None:
        """A notify line read by the reader thread: new state, and the loop is woken."""
        self._state = state
        self.node.wake()


class VrrpHost(Protocol):
    """What the driver needs of its node."""

    def beat(self) -> None: ...

    def gate_text(self) -> str: ...

    def write_gate(self, text: str) -> None: ...

    def rank_text(self) -> str: ...

    def write_rank(self, text: str) -> None: ...

    def spawn_keepalived(self, driver: SimVrrp, warm: VrrpState | None) -> Keepalived: ...

    def wake(self) -> None: ...
