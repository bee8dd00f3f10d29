"""escmanager as the agent sees it: a supervised child process plus its control socket.

Activation is a message on the control socket, not a process start, so a failover never waits
for Python to start up: the manager runs on both nodes all the time.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from esc.agent.manager_files import TlsCopy, manager_account, setpriv_options, stage
from esc.config.schema import EscConfig, NodePaths
from esc.drivers.proc import Child
from esc.errors import DriverError, EscError
from esc.manager.control import ManagerControl
from esc.manager.tls import ensure_certificate
from esc.model import ServiceView

log = logging.getLogger("esc.service")


def manager_argv() -> list[str]:
    """The esc-manager beside the running interpreter (the same virtualenv)."""
    return [str(Path(sys.executable).parent / "esc-manager")]


class ManagedService:
    def __init__(
        self,
        paths: NodePaths,
        primary_url: str | None = None,
        cfg: EscConfig | None = None,
        timeout: float = 2.0,
        check_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.paths = paths
        self.primary_url = primary_url
        self.control = ManagerControl(paths.manager_socket, timeout)
        env = dict(os.environ, ESC_ROOT=str(paths.root))
        # With the config: the manager runs as its own unprivileged user, on the files
        # manager_files.stage makes for it (a copy of the config without secrets among them).
        self.cfg = cfg
        self.account = manager_account() if cfg is not None else None
        self.tls: TlsCopy | None = None
        opts = setpriv_options(cfg, self.account) if cfg is not None else []
        self.child = Child(
            "esc-manager", manager_argv(), paths.log_dir / "escmanager.stdout", env, opts
        )
        self.check_interval = check_interval
        self.clock = clock
        self._failures = 0
        self._last_failure = -1e9
        self._active = False
        self._healthy = False
        self._until: float | None = None  # the agent's lease (quorum mode), last given
        self._sent_until: float | None = None  # what the manager was last told
        self._lease_failed = False
        self._lease_wake = threading.Event()
        self._pusher: threading.Thread | None = None

    def ensure_running(self) -> None:
        if not self.child.is_alive():
            if self.child.starts:
                log.warning("esc-manager exited; restarting it")
            self._active = False
            if self.cfg is not None:
                extra, self.tls = stage(self.cfg, self.paths, self.account)
                self.child.argv = [*manager_argv(), *extra]
            self.child.start()

    def start_checks(self) -> None:
        """Health checks run in their own thread: the manager's check waits up to a second on
        a dead database, and the agent's cycle must not wait with it."""
        threading.Thread(target=self._check_loop, name="service-health", daemon=True).start()

    def _check_loop(self) -> None:
        while True:
            t0 = self.clock()
            self._sync_tls()
            self._check()
            time.sleep(max(0.0, self.check_interval / 2 - (self.clock() - t0)))

    def _sync_tls(self) -> None:
        """A replaced northbound certificate (`escadm cert rotate`) copied for the manager,
        which reloads it into its listeners by itself."""
        if self.tls is None:
            return
        try:
            if self.tls.sync():
                log.info("copied the new northbound certificate %s for esc-manager", self.tls.cert)
        except OSError as exc:
            log.warning("the northbound certificate not copied for esc-manager: %s", exc)

    def _check(self) -> None:
        try:
            st = self.control.status()
        except DriverError:
            # Starting up (socket not there yet) or dead: unhealthy, and not active.
            self._healthy = False
            self._active = False
            self._failed()
            return
        self._healthy = st.healthy
        self._active = st.active
        if st.healthy:
            self._failures = 0
        else:
            self._failed()

    def observe(self) -> ServiceView:
        """The latest health check, and what we last told the manager (no I/O here)."""
        return ServiceView(active=self._active, healthy=self._healthy, failures=self._failures)

    def _failed(self) -> None:
        # Count at most one failure per check interval: N failures mean N seconds of trouble,
        # not N fast cycles (a primary must not yield over a 0.5 s hiccup).
        now = self.clock()
        if now - self._last_failure >= self.check_interval:
            self._failures += 1
            self._last_failure = now

    def activate(self, primary: str) -> None:
        self.control.activate(primary, self._until)
        self._active, self._sent_until = True, self._until

    def lease(self, until: float | None) -> None:
        """Pass the agent's lease on to an active manager, from a thread of its own: the
        cycle never waits on the manager (a stalled cycle would fail keepalived's heartbeat
        check). Unrenewed, the manager stops serving at the last instant it was told."""
        self._until = until
        if not self._active or until == self._sent_until:
            return
        if self._pusher is None:
            self._pusher = threading.Thread(target=self._push_leases, name="lease", daemon=True)
            self._pusher.start()
        self._lease_wake.set()

    def _push_leases(self) -> None:
        while True:
            self._lease_wake.wait()
            self._lease_wake.clear()
            until = self._until
            if not self._active or until == self._sent_until:
                continue
            try:
                serving = self.control.lease(until)
            except DriverError as exc:
                if not self._lease_failed:
                    log.warning("esc-manager's lease not renewed: %s", exc)
                self._lease_failed = True
                continue  # the next cycle's lease() tries again
            self._sent_until, self._lease_failed = until, False
            if not serving:  # it stopped by itself (its lease ran out): the cycle activates
                self._active = False

    def deactivate(self, primary: str | None) -> None:
        if not self.child.is_alive():
            return
        self.control.deactivate(primary, self.primary_url if primary else None)
        self._active = False

    def reconfigure(self, cfg: EscConfig) -> None:
        """The reloaded config for the next start; the pair's certificate reissued now if the
        addresses it names changed (the check loop copies it, the manager reloads it)."""
        if self.cfg is None:
            return
        self.cfg = cfg
        try:
            cert, key = ensure_certificate(self.paths, cfg.manager, cfg)
        except (EscError, OSError) as exc:
            log.warning("reload: the northbound certificate not reissued: %s", exc)
            return
        if self.tls is not None and (cert, key) != (self.tls.cert, self.tls.key):
            self.tls.cert, self.tls.key = cert, key

    def stop(self) -> None:
        self.child.stop()
