"""The executor: each action type has one handler (``Executor.table``); a decision's actions
run in order, the first failure stops the rest (they are retried by the next cycle's decision,
each being idempotent)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from esc.core.facts import fmt_lsn
from esc.drivers.base import Database, FollowResult, Quorum, Service, Vip, Vrrp
from esc.errors import EscError
from esc.model import (
    Action,
    ActivateService,
    CloseGate,
    DeactivateService,
    Decision,
    DropSync,
    Follow,
    InitPrimary,
    OpenGate,
    Promote,
    RecordSync,
    RemoveVip,
    RestartVrrp,
    RestoreSync,
    StartDb,
)
from esc.status_view import Progress

log = logging.getLogger("esc.agent")

Job = Callable[[], Any]
Done = Callable[[Any, BaseException | None], None]


class Threaded:
    """Runs a long action on its own thread; the cycle goes on (heartbeat, operator requests,
    the peer view) and collects the result when it is done. ``wake`` runs a cycle at once."""

    def __init__(self, wake: Callable[[], None]) -> None:
        self.wake = wake

    def submit(self, name: str, job: Job, done: Done) -> None:
        def run() -> None:
            try:
                result = job()
            except Exception as exc:  # any failure is the action's: handed back, logged
                done(None, exc)
            else:
                done(result, None)
            self.wake()

        threading.Thread(target=run, name=f"long-{name}", daemon=True).start()


class Runner(Protocol):
    def submit(self, name: str, job: Job, done: Done) -> None: ...


class Executor:
    def __init__(
        self,
        *,
        node_name: str,
        peer_name: str,
        peer_host: str,
        vrrp: Vrrp,
        vip: Vip,
        db: Database,
        service: Service,
        history: Any,
        state: Callable[[], str],
        beat: Callable[[], object],
        runner: Runner | None = None,
        quorum: Quorum | None = None,
    ) -> None:
        """``peer_host``: the peer's address (the only node a Follow may name); ``state``: the
        node's state for history entries; ``beat``: called before each action and on progress
        (systemd's watchdog: each action gets the whole WatchdogSec); ``runner``: where long
        actions (Follow: a clone may take hours) run; None: inline, in the cycle."""
        self.node_name = node_name
        self.peer_name = peer_name
        self.peer_host = peer_host
        self.vrrp = vrrp
        self.vip = vip
        self.db = db
        self.service = service
        self.quorum = quorum  # quorum mode only
        self.history = history
        self.state = state
        self.beat = beat
        self.primary: str | None = None  # the decision's serving node, named on deactivation
        self.told_primary: str | None = None  # what the inactive manager was last told
        self.progress: Progress | None = None  # a clone or rewind under way (for escadm)
        self.runner = runner  # None: long actions run inline, in the cycle (the simulation)
        self.busy: str | None = None  # the long action under way ("following esc-ha-0")
        self._done: list[tuple[Follow, Any, BaseException | None, float]] = []
        self._lock = threading.Lock()
        self.table: dict[type[Action], Callable[[Any], None]] = {
            OpenGate: lambda _a: self.vrrp.set_gate(True),
            CloseGate: lambda _a: self.vrrp.set_gate(False),
            RemoveVip: lambda _a: self.vip.remove(),
            RestartVrrp: lambda _a: self.vrrp.start(),
            Promote: lambda a: self.db.promote(a.above_timeline),
            Follow: self._follow,
            InitPrimary: lambda _a: self.db.init_primary(),
            StartDb: lambda _a: self.db.start(),
            ActivateService: lambda _a: self.service.activate(self.node_name),
            DeactivateService: self._deactivate,
            DropSync: lambda _a: self.db.set_synchronous(None),
            RestoreSync: lambda _a: self.db.set_synchronous(self.peer_name),
            RecordSync: self._record_sync,
        }

    def collect(self) -> bool:
        """Take the result of a long action that has finished (at the start of a cycle, before
        observing); False if it failed."""
        with self._lock:
            done, self._done = self._done, []
        ok = True
        for action, result, exc, started in done:
            if exc is not None:
                log.error("%s failed: %s", action.kind, exc)
                ok = False
            else:
                self._followed(result, started)
        return ok

    def run(self, d: Decision) -> bool:
        """The decision's rank and actions; False if one failed (the rest were not run)."""
        self.primary = d.primary
        try:
            self.vrrp.set_rank(d.rank)
        except OSError as exc:
            log.error("data rank not written: %s", exc)
        for action in d.actions:
            self.beat()
            try:
                self.do(action)
            except (EscError, OSError) as exc:
                log.error("%s failed: %s", action.kind, exc)
                return False
        return True

    def do(self, a: Action) -> None:
        handler = self.table.get(type(a))
        if handler is None:
            raise EscError(f"no executor for {a.kind}")
        handler(a)

    def tell_primary(self, primary: str | None) -> None:
        """Keep an inactive manager's 503 answers naming the node that serves."""
        if primary != self.told_primary:
            try:
                self.service.deactivate(primary)
                self.told_primary = primary
            except EscError as exc:
                log.debug("could not tell the manager the primary: %s", exc)

    def _record_sync(self, a: RecordSync) -> None:
        if self.quorum is None:
            raise EscError("RecordSync: not in quorum mode")
        log.debug(  # (each cycle until the view shows it; the keeper logs what it recorded)
            "recording in etcd: primary %s, sync standby %s",
            a.record.primary,
            a.record.sync or "none",
        )
        self.quorum.record_sync(a.record, a.from_revision)

    def _deactivate(self, _a: DeactivateService) -> None:
        self.told_primary = self.primary
        self.service.deactivate(self.primary)

    def _follow(self, a: Follow) -> None:
        if a.primary != self.peer_name:
            raise EscError(f"Follow: {a.primary!r} is not the peer {self.peer_name!r}")
        if self.busy is not None:
            raise EscError(f"Follow: {self.busy} already")
        host = self.peer_host

        def on_progress(operation: str, done: int, total: int) -> None:
            self.beat()
            self.progress = Progress(f"{operation} from {a.primary}", done, total, time.time())

        def finished(result: Any, exc: BaseException | None) -> None:
            with self._lock:
                self.busy = None
                self.progress = None
                self._done.append((a, result, exc, started))

        started = time.monotonic()
        if self.runner is None:
            try:
                res = self.db.follow(host, progress=on_progress)
            finally:
                self.progress = None
            self._followed(res, started)
            return
        self.busy = f"following {a.primary}"
        self.runner.submit("follow", lambda: self.db.follow(host, progress=on_progress), finished)

    def _followed(self, res: FollowResult, started: float) -> None:
        if res.preserved is not None:
            since = (
                f"after LSN {fmt_lsn(res.diverged_from_lsn)}"
                if res.diverged_from_lsn
                else "(whole data directory)"
            )
            log.warning("diverged transactions %s preserved in %s", since, res.preserved)
            state = self.state()
            self.history.add(state, state, f"diverged writes preserved in {res.preserved}")
        took = time.monotonic() - started
        log.info("following %s: %s in %.2f s", self.peer_host, res.method, took)
