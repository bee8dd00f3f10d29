"""The agent's side of the manager's lease (quorum mode): passed on from a thread of its own,
so the cycle never waits on the manager; a manager that says it stopped is inactive."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from esc.agent.service import ManagedService
from esc.config.schema import NodePaths
from esc.errors import ServiceError


class Control:
    """The control socket: records each lease; ``block`` holds the call (a stalled manager)."""

    def __init__(self) -> None:
        self.leases: list[float | None] = []
        self.block = threading.Event()
        self.block.set()
        self.serving = True
        self.fail = False
        self.attempts = 0

    def activate(self, primary: str, until: float | None = None) -> None:
        self.leases.append(until)

    def lease(self, until: float | None) -> bool:
        self.block.wait(10)
        self.attempts += 1
        if self.fail:
            raise ServiceError("escmanager via /run/esc/manager.sock: timed out")
        self.leases.append(until)
        return self.serving


def service(tmp_path: Path) -> tuple[ManagedService, Control]:
    svc = ManagedService(NodePaths(tmp_path))
    control = Control()
    svc.control = control  # type: ignore[assignment]
    return svc, control


def wait_until(check: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_activation_carries_the_lease_and_renewals_follow_it(tmp_path: Path) -> None:
    svc, control = service(tmp_path)
    svc.lease(10.0)  # not active yet: nothing sent, but kept for the activation
    assert control.leases == []
    svc.activate("esc-ha-0")
    assert control.leases == [10.0]
    svc.lease(10.0)  # unchanged: not sent again
    svc.lease(10.5)
    wait_until(lambda: control.leases[-1] == 10.5)
    assert control.leases == [10.0, 10.5]


def test_a_stalled_manager_never_stalls_the_cycle(tmp_path: Path) -> None:
    svc, control = service(tmp_path)
    svc.activate("esc-ha-0")
    control.block.clear()  # the manager stops answering
    t0 = time.monotonic()
    for i in range(20):
        svc.lease(11.0 + i)
    assert time.monotonic() - t0 < 0.5  # each call returned at once (bound far from 20 x 2 s)
    control.block.set()
    wait_until(lambda: control.leases[-1] == 30.0)  # the latest one reaches it


def test_a_manager_that_stopped_by_itself_is_inactive_and_failures_are_retried(
    tmp_path: Path,
) -> None:
    svc, control = service(tmp_path)
    svc.activate("esc-ha-0")
    control.fail = True
    svc.lease(12.0)
    wait_until(lambda: control.attempts == 1)  # refused
    assert control.leases == [None]
    control.fail = False
    svc.lease(12.0)  # the next cycle passes the same lease again: retried
    wait_until(lambda: control.leases[-1] == 12.0)
    assert svc.observe().active
    control.serving = False  # its lease had run out: it deactivated itself
    svc.lease(13.0)
    wait_until(lambda: not svc.observe().active)
