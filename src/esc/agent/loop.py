"""The agent's loop: observe -> decide -> execute -> publish. Owns timing; decides nothing.

One cycle runs every ``agent.cycle_s``, and at once whenever keepalived reports a transition,
the peer's view changes, or an operator asks for something. While a role change is under way
(promote, activate, follow...) cycles run back to back, so the failover path has no polling step.
"""

from __future__ import annotations

import functools
import logging
import math
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from esc.agent import monitor
from esc.agent.disk import free_for_db
from esc.agent.execute import Executor, Runner
from esc.agent.memory import MEMORY_FILE, PERSISTED, load_memory, memory_text
from esc.agent.publish import announced, status_of, view_of
from esc.agent.routes import apply_routes
from esc.agent.systemd import Notifier, state_line
from esc.config.schema import EscConfig, NodePaths, load_config, write_atomic
from esc.core.decide import decide
from esc.core.facts import DecideConfig, unobserved
from esc.core.requests import (
    cancel_switchover,
    due_switchover,
    force_primary,
    request_switchover,
    schedule_switchover,
    set_pause,
)
from esc.drivers.base import (
    Bgp,
    Database,
    GatewaySource,
    PeerSource,
    Quorum,
    Service,
    Vip,
    Vrrp,
)
from esc.errors import ConfigError, DriverError, EscError
from esc.model import (
    DbRole,
    DbStatus,
    Decision,
    Memory,
    NodeState,
    Observation,
)
from esc.status_view import Endpoints, StatusView, status_json

log = logging.getLogger("esc.agent")
MAX_BACK_TO_BACK = 8
# Cycles that fail in a row (any exception: a driver's parser, a bug) before the node goes
# FAULT (rule agent-fault): it gives up the VIP rather than hold it blind. Fewer are retried
# quietly (a transient error); the first cycle that succeeds again ends the fault.
MAX_FAILED_CYCLES = 5
# A standby stopping on purpose waits at most this for its primary to stop waiting for it.
LEAVE_NOTICE_S = 1.5
# The operator's requests on the local socket (POST; the portal's read-only socket refuses them)
LOCAL_REQUESTS = (
    "/switchover", "/force-primary", "/reload", "/pause", "/resume", "/switchover/schedule",
    "/switchover/cancel",
)  # fmt: skip


def hurried(d: Decision | None, action_failed: bool) -> bool:
    """The next cycle runs at once: this one's actions changed the role (``Action.hurries``)
    and none failed (a failed action is retried next cycle: no busy loop, no log flood)."""
    return d is not None and not action_failed and any(a.hurries for a in d.actions)


@dataclass
class Request:
    """An operator request, handled by the main loop at the start of its next cycle."""

    kind: str  # "switchover" | "force-primary" | "reload" | "pause" | "resume" |
    # "switchover/schedule" | "switchover/cancel"
    who: str = ""
    at: float | None = None  # switchover/schedule: epoch seconds
    done: threading.Event = field(default_factory=threading.Event)
    ok: bool = False
    message: str = ""


def live_change_refusal(old: EscConfig, new: EscConfig) -> str | None:
    """The first setting that a running pair cannot change (None: all can be applied)."""
    if (old.ha is None) != (new.ha is None):
        return "ha (configured or not)"
    if old.ha is not None and new.ha is not None:
        # Changing these on one node at a time would split the pair (another VRRP group, other
        # names or addresses): they need both agents restarted together.
        for field_name in ("ha_node_list", "node_names", "kad_vif", "ha_mode", "quorum", "witness"):
            if getattr(old.ha, field_name) != getattr(new.ha, field_name):
                return f"ha.{field_name}"
        if old.ha.vrid != new.ha.vrid:  # the effective one: kad_vri or the VIP's last byte
            return "ha.kad_vri"
        if (old.ha.gateway_ip is None) != (new.ha.gateway_ip is None):
            return "ha.gateway_ip (added or removed: the gateway probe starts with the agent)"
    if old.quorum_cfg != new.quorum_cfg:
        return "quorum (etcd's timing and ports: restart the three hosts' members)"
    if old.database != new.database:
        return "database"
    if old.agent.peer_port != new.agent.peer_port:
        return "agent.peer_port"
    # The secrets are read once, at the start: the peer API's server and poller hold the peer
    # secret, PostgreSQL the replication role's password (set on the primary at its start,
    # written into the standby's connection then). Both nodes must change them together:
    # docs/operations.md section 12 has the order.
    if old.agent.peer_secret != new.agent.peer_secret:
        return (
            "agent.peer_secret (the pair's shared secret: change it on both nodes, then restart "
            "both agents, docs/operations.md section 12)"
        )
    if old.replication.password != new.replication.password:
        return (
            "replication.password (the pair's shared secret: change it on both nodes and the "
            "primary's replicator role, docs/operations.md section 12)"
        )
    if old.manager != new.manager:
        return "manager"
    return None


@dataclass
class Published:
    """What the APIs serve: written by the loop, read by handler threads (replaced whole)."""

    view: dict[str, Any] = field(default_factory=dict)
    status: Callable[[], StatusView] | None = None  # Agent._status


class Agent:
    def __init__(
        self,
        *,
        cfg: EscConfig,
        paths: NodePaths,
        dcfg: DecideConfig,
        peer_host: str,
        vrrp: Vrrp,
        vip: Vip,
        db: Database,
        service: Service,
        peer: PeerSource,
        gateway: GatewaySource | None,
        history: Any,
        bgp: Bgp | None = None,
        make_bgp: Callable[[EscConfig], Bgp | None] | None = None,
        clock: Any = time.monotonic,
        long_runner: Runner | None = None,
        quorum: Quorum | None = None,
        disk: Callable[[], int | None] | None = None,
    ) -> None:
        self.cfg = cfg
        # bytes free for the database (esc.agent.disk; tests pass their own)
        self.disk = disk if disk is not None else lambda: free_for_db(paths.pgdata)
        self.paths = paths
        self.dcfg = dcfg
        self.peer_host = peer_host
        self.vrrp = vrrp
        self.vip = vip
        self.db = db
        self.service = service
        self.peer = peer
        self.gateway = gateway
        self.history = history
        self.bgp = bgp  # the anycast route (ExaBGP), announced only while MASTER
        self.make_bgp = make_bgp  # builds it again when `escadm reload` changes [bgp]
        self._bgp_started = False
        self.clock = clock
        self.wake = threading.Event()
        self.requests: queue.Queue[Request] = queue.Queue()
        self.published = Published()
        # A memory file that cannot be trusted: the node stays FAULT (rule agent-fault) and
        # the file is never written, until the operator fixes or removes it and restarts.
        self.memory_fault: str | None = None
        self.mem = self._load_memory()
        self.failed_cycles = 0  # cycles failed in a row (MAX_FAILED_CYCLES: FAULT)
        self.failure: str | None = None  # the last cycle failure, while they go on failing
        self.last: Decision | None = None
        self.last_obs: Observation | None = None
        self.since = time.time()
        self._stop = threading.Event()
        self.action_failed = False  # the last cycle had an action fail (retry after a pause)
        self.cycles = 0  # decisions recorded: in the peer view, so the peer sees us cycling
        self.counts = monitor.Counts()  # for /metrics (esc.agent.monitor)
        self.endpoints: Endpoints | None = None  # the monitoring URLs (build_agent sets them)
        self.notifier = Notifier(None)  # systemd's notify socket (main sets it); no-op here
        # What start() starts (the APIs, the peer poller, the checks; build_agent fills it):
        # constructing an agent starts no thread and binds nothing.
        self.starters: list[Callable[[], object]] = []
        self.supervised: list[Callable[[], None]] = []  # run each cycle (restart a dead child)
        self.stoppers: list[Callable[[], None]] = []  # run by stop(), after the VIP is gone
        self.quorum = quorum  # quorum mode: etcd's leader key and record (QuorumKeeper)
        self.executor = Executor(
            node_name=dcfg.node_name,
            peer_name=dcfg.peer_name,
            peer_host=peer_host,
            vrrp=vrrp,
            vip=vip,
            db=db,
            service=service,
            history=history,
            state=lambda: self.mem.state.value,
            beat=lambda: self.notifier.watchdog(),  # noqa: PLW0108 (main sets the notifier later)
            runner=long_runner,
            quorum=quorum,
        )

    # --- memory -----------------------------------------------------------------------------

    @property
    def _memory_file(self) -> Path:
        return self.paths.data_dir / MEMORY_FILE

    def _load_memory(self) -> Memory:
        """A bad file is never reset: the agent runs FAULT with the reason naming it
        (``memory_fault``), on the defaults, which it never writes over the file."""
        try:
            return load_memory(self._memory_file)
        except ConfigError as exc:
            self.memory_fault = f"{exc} (then restart the agent)"
            log.error("FAULT until fixed: %s", self.memory_fault)
            return Memory()

    def _save_memory(self, mem: Memory) -> None:
        if self.memory_fault is not None:
            return  # the operator's to fix: never replaced by what this run learnt
        write_atomic(self._memory_file, memory_text(mem))

    def fault(self) -> str | None:
        """The agent's own fault for this cycle's observation (``Observation.fault``)."""
        if self.memory_fault is not None:
            return self.memory_fault
        if self.failed_cycles >= MAX_FAILED_CYCLES:
            return f"{self.failed_cycles} cycles failed in a row, the last: {self.failure}"
        return None

    # --- one cycle --------------------------------------------------------------------------

    def observe(self) -> Observation:
        busy = self.executor.busy
        if busy is not None:
            db = DbStatus(DbRole.STOPPED)  # the long action owns the database meanwhile
        else:
            try:
                db = self.db.status()
            except DriverError as exc:
                log.warning("database status failed: %s", exc)
                db = DbStatus(DbRole.STOPPED)
        return Observation(
            now=self.clock(),
            wall=time.time(),
            vrrp=self.vrrp.state(),
            vip_held=self.vip.is_held(),
            db=db,
            service=self.service.observe(),
            peer=self.peer.current(),
            gateway_ok=None if self.gateway is None else self.gateway.ok(),
            gate_open=self.vrrp.gate_open,
            busy=busy,
            quorum=self.quorum.observe() if self.quorum is not None else None,
            fault=self.fault(),
            disk_free=self.disk(),
        )

    def cycle(self) -> Decision:
        self.vrrp.beat()
        self.service.ensure_running()
        for check in self.supervised:
            check()
        long_ok = self.executor.collect()  # a long action that finished since the last cycle
        obs = self.observe()
        if obs.quorum is not None:  # the manager's backstop: it stops when the lease does
            q = obs.quorum
            self.service.lease(obs.now + q.serve_left if q.holder else obs.now)
        mem = self._take_requests(obs, self.mem)
        mem, note = due_switchover(obs, mem, self.dcfg)
        if note is not None:
            log.info(note)
            self.history.add(mem.state.value, mem.state.value, note)
        if obs.fault is not None and self.memory_fault is None:
            # Failing cycles: would the rules decide without the fault? (pure: raises if not;
            # then this cycle fails too and the node stays FAULT)
            decide(replace(obs, fault=None), mem, self.dcfg)
        d = decide(obs, mem, self.dcfg)
        # The state file says SWITCHING before the promote runs, not after.
        self._record(obs, d)
        self._execute(d, long_ok)
        if self.quorum is not None:  # after the actions: a node stops serving, then resigns
            if not d.campaign:  # (and its manager's lease ends now, even if it did not stop)
                self.service.lease(self.clock())
            self.quorum.want_leader(d.campaign)
        self._name_primary(obs, d)
        if self.bgp is not None:
            self._steer_bgp(d.announce)
        return d

    def _steer_bgp(self, announce: bool) -> None:
        """After the promote and activation, so the route leads to a serving node; every other
        state withdraws it. Problems are logged and retried next cycle, never raised (they must
        not stop a failover or the cycle)."""
        assert self.bgp is not None
        try:
            if not self._bgp_started:
                self.bgp.start()
                self._bgp_started = True
            self.bgp.set_announced(announce)
            self.bgp.tick()
        except EscError as exc:
            log.error("BGP: %s (retried next cycle)", exc)

    def _name_primary(self, obs: Observation, d: Decision) -> None:
        """Keep an inactive manager's 503 answers naming the node that serves (d.primary)."""
        if d.next_state is not NodeState.MASTER and not obs.service.active:
            self.executor.tell_primary(d.primary)

    def _take_requests(self, obs: Observation, mem: Memory) -> Memory:
        while True:
            try:
                req = self.requests.get_nowait()
            except queue.Empty:
                return mem
            if req.kind == "switchover":
                mem, why = request_switchover(obs, mem, self.dcfg)
                if why is None:
                    req.ok, req.message = True, f"switchover to {self.dcfg.peer_name} started"
                    self.history.add(
                        mem.state.value,
                        mem.state.value,
                        f"switchover requested by {req.who or 'operator'}",
                    )
                else:
                    req.message = f"switchover refused: {why}"
            elif req.kind == "reload":
                req.ok, req.message = self._reload()
            elif req.kind in ("pause", "resume"):
                who = f"{req.who or 'operator'} on {self.dcfg.node_name}"
                mem, req.message = set_pause(obs, mem, req.kind == "pause", who)
                req.ok = True
            elif req.kind == "switchover/schedule":
                assert req.at is not None  # handle_local checked the body
                mem, why = schedule_switchover(obs, mem, req.at, req.who or "operator")
                req.ok = why is None
                req.message = (
                    f"switchover refused: {why}"
                    if why is not None
                    else f"switchover to {self.dcfg.peer_name} scheduled at {req.at:.0f} (epoch)"
                )
                if why is None:
                    self.history.add(mem.state.value, mem.state.value, req.message)
            elif req.kind == "switchover/cancel":
                mem, why = cancel_switchover(mem, req.who or "operator")
                req.ok = why is None
                req.message = mem.switchover_note if why is None else f"cancel refused: {why}"
                if why is None:
                    self.history.add(mem.state.value, mem.state.value, req.message)
            elif req.kind == "force-primary" and self.memory_fault is not None:
                req.message = f"force-primary refused: {self.memory_fault}"
            elif req.kind == "force-primary":
                mem = force_primary(mem)
                req.ok = True
                req.message = (
                    f"forced primary by {req.who or 'operator'}: this node may become "
                    "primary without its peer; writes the peer had may be lost"
                )
                log.warning(req.message)
                self.history.add(mem.state.value, mem.state.value, req.message)
            req.done.set()

    def _reload(self) -> tuple[bool, str]:
        """Apply a changed esc.toml without a role change: keepalived by SIGHUP, policies and
        timings at once. What cannot change under a running pair is refused, naming it."""
        try:
            new = load_config(self.paths.config_file)
        except EscError as exc:
            return False, f"reload refused: {exc}"
        fixed = live_change_refusal(self.cfg, new)
        if fixed:
            return False, f"reload refused: {fixed} cannot change live; restart the agent"
        changed: list[str] = []
        if self.vrrp.reload(new):
            changed.append(str(self.paths.run_dir / "keepalived.conf"))
        if new.bgp != self.cfg.bgp:
            # A new neighbor or address: a new ExaBGP (the session restarts; a MASTER
            # announces again on this cycle).
            if self.bgp is not None:
                self.bgp.stop()
            try:
                self.bgp = self.make_bgp(new) if self.make_bgp is not None else None
            except EscError as exc:
                self.bgp = None
                log.error("reload: BGP not restarted: %s", exc)
            self._bgp_started = False  # started by this cycle's _steer_bgp
            changed.append(str(self.paths.run_dir / "exabgp.conf"))
        if new.ha is not None and (self.cfg.ha is None or new.ha.routes != self.cfg.ha.routes):
            changed += [f"route {r}" for r in apply_routes(new.ha.routes)]
        self.cfg = new
        self.service.reconfigure(new)
        self.dcfg = replace(
            self.dcfg,
            policy=new.replication.on_standby_loss,
            standby_loss_grace_s=new.replication.standby_loss_grace_s,
            health_failures=new.agent.health_failures,
            peer_agent_timeout_s=new.agent.heartbeat_timeout_s,
            gateway=str(new.ha.gateway_ip) if new.ha and new.ha.gateway_ip else None,
        )
        if self.gateway is not None and self.dcfg.gateway is not None:
            self.gateway.retarget(self.dcfg.gateway)
        self.history.add(self.mem.state.value, self.mem.state.value, "config reloaded")
        files = ", ".join(changed) if changed else "no generated file changed"
        return True, f"reloaded: {files}"

    def _execute(self, d: Decision, long_ok: bool = True) -> None:
        self.action_failed = not self.executor.run(d) or not long_ok

    def _record(self, obs: Observation, d: Decision) -> None:
        prev = self.mem
        self.last_obs = obs
        if d.next_state != prev.state:
            self.history.add(prev.state.value, d.next_state.value, d.reason)
            self.counts.transition(prev.state.value, d.next_state.value)
            write_atomic(self.paths.state_file, d.next_state.value + "\n")
            self.since = time.time()
            log.info("%s -> %s: %s [%s]", prev.state.value, d.next_state.value, d.reason, d.rule_id)
        elif self.last is None or d.reason != self.last.reason:
            log.info("%s: %s [%s]", d.next_state.value, d.reason, d.rule_id)
        # systemd: ready once the first cycle has decided (before its actions: a clone may take
        # hours), then the state line whenever it changes (Notifier.status skips repeats).
        line = state_line(d.next_state.value, d.reason)
        if self.last is None:
            self.notifier.ready(line)
        else:
            self.notifier.status(line)
        if prev.pause != d.memory.pause:
            # asked here or learnt from the peer's view: one entry either way
            p = d.memory.pause
            what = "paused (maintenance mode)" if p.paused else "resumed"
            note = f"pair {what} by {p.by or '?'}"
            log.log(logging.WARNING if p.paused else logging.INFO, note)
            self.history.add(d.next_state.value, d.next_state.value, note)
        if any(getattr(prev, k) != getattr(d.memory, k) for k in PERSISTED):
            self._save_memory(d.memory)
        self.mem = d.memory
        self.last = d
        self.cycles += 1
        self.published = Published(self._view(obs, d), self._status(obs, d))
        self._count(obs, d)

    def _count(self, obs: Observation, d: Decision) -> None:
        """The figures /metrics adds to the status: cycles, the last takeover's duration."""
        counts = self.counts
        counts.cycles = self.cycles
        counts.cycle_end = time.monotonic()
        counts.failover.observe(
            counts.cycle_end,
            time.time(),
            peer_serving=obs.peer.reachable and obs.peer.serving,
            self_serving=(
                obs.service.active
                and obs.db.role is DbRole.PRIMARY
                and d.next_state is NodeState.MASTER
            ),
        )

    def _announce_leave(self) -> None:
        """A standby stopping on purpose (an upgrade, a reboot) says so before its database
        goes: its peer view says STOP, and the primary, under ``available``, stops waiting for
        it at once instead of after ``standby_loss_grace_s`` (``decide``: the standby is then
        outdated until it has caught up). Waits until the primary has marked it outdated, at
        most LEAVE_NOTICE_S (under ``strict`` the primary keeps waiting: so do writes)."""
        view = self.published.view
        if view.get("db_role") != DbRole.STANDBY.value or not self.peer.current().reachable:
            return
        self.published = Published(
            {**view, "state": NodeState.STOP.value, "reason": "agent stopping"},
            self.published.status,
        )
        deadline = self.clock() + LEAVE_NOTICE_S
        while self.clock() < deadline:
            if self.peer.current().outdated_lsn is not None:
                log.info("stopping: %s no longer waits for us", self.dcfg.peer_name)
                return
            time.sleep(0.02)
        log.info("stopping: %s did not confirm in %.1fs", self.dcfg.peer_name, LEAVE_NOTICE_S)

    # --- what the APIs serve -----------------------------------------------------------------

    def _view(self, obs: Observation, d: Decision) -> dict[str, Any]:
        return view_of(self.dcfg, obs, d, self._announced(), self.cycles)

    def _status(self, obs: Observation, d: Decision) -> Callable[[], StatusView]:
        """The status, built when it is asked for (escadm, the portal: about once a second)
        rather than every cycle, from what this cycle saw (all of it immutable)."""
        last = (self.history.last(1) or [None])[0]
        bgp = self.bgp.status() if self.bgp is not None else None
        return functools.partial(status_of, self.cfg, self.dcfg, self.since, obs, d, bgp, last)

    def _announced(self) -> bool:
        return announced(self.bgp.status() if self.bgp is not None else None)

    def _diverged_dumps(self) -> tuple[str, ...]:
        """Transactions this node had that its peer lacked, kept before a rewind (never lost)."""
        kept = (self.paths.data_dir / "diverged").glob("*")
        kinds = ("diverged-", "pgdata-", "wal-")
        return tuple(sorted(str(p) for p in kept if p.name.startswith(kinds)))

    def handle_local(
        self, method: str, path: str, body: dict[str, Any]
    ) -> tuple[int, dict[str, Any]]:
        if method == "GET" and path == "/status":
            st = self.status_view()
            if st is None:
                return 503, {"error": "the agent has not completed its first cycle yet"}
            return 200, status_json(st)
        if method == "GET" and path.startswith("/history"):
            return 200, {"history": self.history.last()}
        if method == "POST" and path in LOCAL_REQUESTS:
            at = None
            if path == "/switchover/schedule":
                at = body.get("at")
                if isinstance(at, bool) or not isinstance(at, int | float) or not math.isfinite(at):
                    return 400, {"error": f"at: {at!r:.40} is not a time (epoch seconds)"}
                at = float(at)
            req = Request(path.lstrip("/"), who=str(body.get("who", ""))[:64], at=at)
            self.requests.put(req)
            self.wake.set()
            if not req.done.wait(10):
                return 504, {"error": "the agent did not take the request within 10 s"}
            return (200 if req.ok else 409), {"ok": req.ok, "message": req.message}
        return 404, {"error": f"no {method} {path}"}

    def status_view(self) -> StatusView | None:
        """The status of the last cycle (None before the first), built now."""
        status = self.published.status
        if status is None:
            return None
        # The dumps are listed per request (a directory listing), not every cycle.
        return replace(
            status(),
            progress=self.executor.progress,
            long_action=self.executor.busy,
            diverged_dumps=self._diverged_dumps(),
            endpoints=self.endpoints,
        )

    def monitor_read(self) -> tuple[StatusView | None, monitor.Counts]:
        """What the monitoring listener serves: the status and the counts."""
        return self.status_view(), self.counts

    def handle_peer(
        self, method: str, path: str, _body: dict[str, Any]
    ) -> tuple[int, dict[str, Any]]:
        if method == "GET" and path == "/peer":
            return 200, self.published.view
        return 404, {"error": f"no {method} {path}"}

    # --- running ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the servers and threads that feed the cycle; then ``run()``."""
        for start in self.starters:
            start()

    def run(self) -> None:
        self.paths.run_dir.mkdir(parents=True, exist_ok=True)
        first = NodeState.FAULT if self.memory_fault is not None else self.mem.state
        write_atomic(self.paths.state_file, first.value + "\n")
        self.vrrp.start()
        if self.cfg.ha is not None:
            # (also when none are configured: removes ours left from an older config)
            for line in apply_routes(self.cfg.ha.routes):
                log.info("route %s", line)
        # ExaBGP is started, withdrawn, by the first cycle's _steer_bgp (and retried there).
        back_to_back = 0
        while not self._stop.is_set():
            self.notifier.watchdog()
            t0 = self.clock()
            d = self.guarded_cycle()
            # (never while cycles fail: a FAULT decided blind gives up the VIP each time)
            busy = hurried(d, self.action_failed) and not self.failed_cycles
            if busy and back_to_back < MAX_BACK_TO_BACK:
                back_to_back += 1
                continue
            back_to_back = 0
            wait = max(0.0, self.cfg.agent.cycle_s - (self.clock() - t0))
            q = self.last_obs.quorum if self.last_obs is not None else None
            if q is not None and q.holder:  # no later than the instant the lease stops counting
                wait = min(wait, q.serve_left)
            self.wake.wait(wait)
            self.wake.clear()

    def guarded_cycle(self) -> Decision | None:
        """One cycle that never raises. Any exception (a full disk, a driver failure, a bug) is
        logged with its traceback and the agent goes on: a node without its agent drops the
        VIP. After MAX_FAILED_CYCLES in a row the node goes FAULT (``fault_cycle``); the first
        cycle that succeeds again resets the count."""
        try:
            d = self.cycle()
        except Exception as exc:
            failure = f"{type(exc).__name__}: {exc}"
            self.failed_cycles += 1
            if self.failed_cycles <= MAX_FAILED_CYCLES or failure != self.failure:
                log.exception("cycle failed (%d in a row): %s", self.failed_cycles, failure)
            else:  # the same failure again, its traceback already logged: one line
                log.error("cycle failed (%d in a row): %s", self.failed_cycles, failure)
            self.failure = failure
            if self.failed_cycles >= MAX_FAILED_CYCLES:
                return self.fault_cycle()
            return None
        if self.failed_cycles:
            log.info("cycle succeeded again after %d failed", self.failed_cycles)
        self.failed_cycles, self.failure = 0, None
        return d

    def fault_cycle(self) -> Decision | None:
        """The cycles keep failing: decide with the fault (rule agent-fault: FAULT, the gate
        closed, the VIP and the service given up), on what can still be observed, else on
        ``unobserved`` (the worst assumed). Each step is best effort, and never raises."""
        fault = self.fault() or "cycles failing"
        try:
            obs = replace(self.observe(), fault=fault)
        except Exception:
            obs = unobserved(self.clock(), time.time(), fault)
        try:
            # (operator requests are answered: a switchover is refused, a reload applies)
            d = decide(obs, self._take_requests(obs, self.mem), self.dcfg)
        except Exception:
            log.exception("FAULT not decided")
            return None
        steps: list[Callable[[], object]] = [
            lambda: self._record(obs, d),
            lambda: self._execute(d),
        ]
        if self.quorum is not None:
            # The manager's lease ends now. (Quorum mode only, as in cycle(): in two-node mode
            # the manager serves without a bound, and a lease left ended here would refuse
            # every later activation: an agent whose memory could not be written on a full
            # disk, back in the pair, could never serve again.)
            steps.append(lambda: self.service.lease(self.clock()))
            steps.append(functools.partial(self.quorum.want_leader, False))
        for step in steps:
            try:
                step()
            except Exception:
                log.exception("FAULT: a step failed")
        return d

    def stop(self) -> None:
        """Stop on purpose: STOP in the state file, service off, VIP released gracefully, the
        database stopped. A standby first tells its primary (``_announce_leave``)."""
        self._stop.set()
        self.notifier.stopping(state_line(NodeState.STOP.value, "agent stopping"))
        self._announce_leave()
        try:
            self.service.deactivate(None)
        except EscError as exc:
            log.warning("deactivate on stop failed: %s", exc)
        self.service.stop()
        if self.bgp is not None:
            self.bgp.stop()  # the session drops: the router withdraws the route
        self.vrrp.stop()
        for stop in self.stoppers:
            try:
                stop()
            except (EscError, OSError) as exc:
                log.warning("stop: %s", exc)
        try:
            # Nothing runs without its agent (systemd's cgroup stop would also get it, where
            # the host's cgroups let it: not in every container).
            self.db.stop()
        except EscError as exc:
            log.warning("database stop failed: %s", exc)
        if self.mem.state is not NodeState.STOP:
            self.history.add(self.mem.state.value, NodeState.STOP.value, "agent stopped")
        write_atomic(self.paths.state_file, NodeState.STOP.value + "\n")
        log.info("agent stopped")
