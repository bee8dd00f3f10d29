"""Gateway tracking: the seed's first troubleshooting step, made automatic.

A node that cannot reach its northbound gateway is isolated; it must not stay primary. The probe
runs in its own thread so a slow ping never delays the agent's cycle.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from esc.drivers.proc import run


class GatewayProbe:
    def __init__(
        self,
        gateway: str,
        failures: int = 3,
        interval: float = 1.0,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        self.gateway = gateway
        self.failures_needed = failures
        self.interval = interval
        self.on_change = on_change
        self._failures = 0

    def start(self) -> None:
        threading.Thread(target=self._run, name="gateway", daemon=True).start()

    def retarget(self, gateway: str) -> None:
        """Probe another address from the next ping on (``escadm reload``)."""
        if gateway != self.gateway:
            self.gateway = gateway
            self._failures = 0

    def ok(self) -> bool:
        return self._failures < self.failures_needed

    def _run(self) -> None:
        while True:
            t0 = time.monotonic()
            before = self.ok()
            res = run(["ping", "-n", "-q", "-c1", "-W1", self.gateway], check=False, timeout=5)
            self._failures = 0 if res.returncode == 0 else self._failures + 1
            if self.ok() != before:
                self.on_change()
            time.sleep(max(0.0, self.interval - (time.monotonic() - t0)))
