"""esc-manager on one node: the process the client writes to, and the agent's driver for it.

The process (``Manager``) accepts a write only while active, on a primary database; the write
commits and answers when the commit is acknowledged (db.py). The driver (``SimService``)
behaves as agent/service.py's ``ManagedService``: ``observe()`` returns the last health check
(every 0.5 s in its own thread; a failure counted at most once a second), ``ensure_running``
restarts a dead manager (which starts inactive and takes a second to answer), activation is
refused on a standby or an unusable database, and a frozen manager makes each control call
time out after 2 s (the agent is stuck in it meanwhile).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from esc.config.schema import EscConfig
from esc.errors import ServiceError
from esc.model import DbRole, ServiceView

from .clock import Sim, Timer
from .db import Postgres
from .wal import Rec

STARTUP_S = 1.0  # a new esc-manager answers on its control socket after this
CONTROL_TIMEOUT_S = 2.0  # ManagedService(timeout=2.0)
CHECK_EVERY_S = 0.5  # check_interval / 2
FAILURE_EVERY_S = 1.0  # failures counted at most once per check_interval

Reply = Callable[[bool, str, Rec | None], None]


class ManagerHost(Protocol):
    name: str
    pg: Postgres
    host_up: bool

    def manager_frozen(self) -> bool: ...

    def pg_frozen(self) -> bool: ...

    def block(self, seconds: float, until: Callable[[], bool] | None = None) -> bool: ...

    def agent_frozen(self) -> bool: ...


class Manager:
    """One esc-manager process."""

    def __init__(self, sim: Sim, host: ManagerHost) -> None:
        self.sim = sim
        self.host = host
        self.alive = True
        self.ready_at = sim.now + STARTUP_S
        self.active = False

    @property
    def answering(self) -> bool:
        return self.alive and self.sim.now >= self.ready_at

    def write(self, write: str, reply: Reply) -> None:
        """A northbound POST with ``write`` as its transaction id (store.accept)."""
        h = self.host
        # Answers go back at once: the client sees the server as it was when it answered.
        if not self.answering:
            reply(False, "connection refused", None)
            return
        if h.manager_frozen():
            return  # no answer: the client times out
        if not self.active:
            reply(False, "503 inactive", None)
            return
        pg = h.pg
        if not pg.running or h.pg_frozen():
            return  # the pool waits for a connection longer than the client does
        if pg.role is not DbRole.PRIMARY:
            reply(False, "read-only database", None)
            return
        found = pg.find(write)
        if found is not None:
            # store.accept: the replay takes a transaction id, so its commit waits for the
            # synchronous standby like a write (the original may be committed here only).
            waiting = pg.pending_for(found) or pg.wait_for_sync(found)
            if waiting is None:
                reply(True, "replayed", found)
            else:
                waiting.waiters.append(lambda ok: reply(ok, "replayed after wait", found))
            return
        rec, pending = pg.commit(write)
        if pending is None:
            reply(True, "committed", rec)
        else:
            pending.waiters.append(lambda ok: reply(ok, "committed after wait", rec))


class SimService:
    """The agent's driver for its manager (implements ``esc.drivers.base.Service``)."""

    def __init__(self, sim: Sim, node: ServiceNode) -> None:
        self.sim = sim
        self.node = node
        self._active = False
        self._healthy = False
        self._failures = 0
        self._last_failure = -1e9
        self.stopped = False
        self.check = Timer(sim, self._check)
        self._asked: float | None = None  # a check waiting on a frozen manager, since

    def warm(self, active: bool) -> None:
        """The warm start (pair.py): the last check saw a healthy manager."""
        self._active, self._healthy = active, True

    def start_checks(self) -> None:
        self.check.set(self.sim.now + CHECK_EVERY_S)

    def ensure_running(self) -> None:
        if self.node.manager is None or not self.node.manager.alive:
            self._active = False
            self.node.start_manager()

    def observe(self) -> ServiceView:
        return ServiceView(active=self._active, healthy=self._healthy, failures=self._failures)

    def _failed(self) -> None:
        now = self.sim.now
        if now - self._last_failure >= FAILURE_EVERY_S:
            self._failures += 1
            self._last_failure = now

    def resumed(self) -> None:
        """The manager answers again: a check waiting on it gets its answer now."""
        if self._asked is not None and not self.stopped:
            self._asked = None
            self._check()

    def _check(self) -> None:
        if self.stopped:
            return
        if self.node.agent_frozen():
            self.check.set(self.sim.now + CHECK_EVERY_S)
            return
        m = self.node.manager
        delay = CHECK_EVERY_S
        if self._asked is not None:  # the control socket's timeout: no answer
            self._asked = None
            self._healthy = self._active = False
            self._failed()
            delay = 0.0  # the check took longer than its interval: the next one at once
        elif m is None or not m.answering:
            self._healthy = self._active = False
            self._failed()
        elif self.node.manager_frozen():
            self._asked = self.sim.now
            self.check.set(self.sim.now + CONTROL_TIMEOUT_S)
            return
        else:
            pg = self.node.pg
            db_ok = pg.running and not self.node.pg_frozen()
            self._active = m.active
            self._healthy = db_ok and not (m.active and pg.role is not DbRole.PRIMARY)
            if self._healthy:
                self._failures = 0
            else:
                self._failed()
        self.check.set(self.sim.now + delay)

    def _control(self, what: str) -> Manager:
        m = self.node.manager
        if m is None or not m.answering:
            raise ServiceError(f"escmanager {what}: control socket not there")
        if self.node.manager_frozen() and not self.node.block(
            CONTROL_TIMEOUT_S, until=lambda: not self.node.manager_frozen()
        ):
            raise ServiceError(f"escmanager {what}: timed out")
        if not m.answering:
            raise ServiceError(f"escmanager {what}: connection reset")
        return m

    def activate(self, primary: str) -> None:
        m = self._control("activate")
        pg = self.node.pg
        if not pg.running or (
            self.node.pg_frozen()
            and not self.node.block(CONTROL_TIMEOUT_S, until=lambda: not self.node.pg_frozen())
        ):
            if pg.running:  # frozen all along; a stopped one fails the pool at once here
                raise ServiceError("escmanager /control/activate: timed out (database frozen)")
            raise ServiceError("database not usable: connection refused")
        if pg.role is not DbRole.PRIMARY:
            raise ServiceError("database is a standby (in recovery): not activating")
        m.active = True
        self._active = True

    def lease(self, until: float | None) -> None:
        raise NotImplementedError("the simulation runs the two-node pair only (no quorum mode)")

    def reconfigure(self, cfg: EscConfig) -> None:
        pass  # the simulated manager reads no config

    def deactivate(self, primary: str | None) -> None:
        m = self.node.manager
        if m is None or not m.alive:
            return
        m = self._control("deactivate")
        m.active = False
        self._active = False

    def stop(self) -> None:
        self.stopped = True
        self.check.cancel()
        self.node.stop_manager()


class ServiceNode(ManagerHost, Protocol):
    manager: Manager | None

    def start_manager(self) -> None: ...

    def stop_manager(self) -> None: ...
