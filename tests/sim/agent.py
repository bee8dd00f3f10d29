"""The real agent (agent/loop.py's ``Agent``) with simulated drivers around it.

``Agent`` is constructed as build_agent constructs it, and run without the threads and servers
its ``start()`` would start: its cycle (observe, operator requests, the real ``decide()``, the
state file and persisted memory on a tmpfs directory, the executor, naming the primary, the
anycast route, the status escadm reads) is the product's code. Only one thing is not: the peer
poller's transport (``PeerPoller.fetch``), which here reads the peer agent's published view
through the simulated network. Its ``poll_once`` and ``current`` are the real ones.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from esc.agent.api import PeerPoller
from esc.errors import DriverError
from esc.model import PeerView
from esc.wire import parse_view, same_view

from .clock import Sim

LATENCY = 0.0005  # one HTTP round trip on the sync network


class SimHistory:
    """The transition log (agent/history.py's interface), kept in memory and in the trace."""

    def __init__(self, trace: Callable[[str], None]) -> None:
        self.trace = trace
        self.items: list[dict[str, Any]] = []

    def add(self, src: str, dst: str, reason: str, at: float | None = None) -> dict[str, Any]:
        item = {"time": at or 0.0, "from": src, "to": dst, "reason": reason}
        self.items.append(item)
        if src == dst:  # transitions are in the trace with their actions (node.py)
            self.trace(f"history: {reason}")
        return item

    def last(self, n: int = 1000) -> list[dict[str, Any]]:
        return self.items[-n:]


class VipHost(Protocol):
    vip: bool

    def trace(self, text: str) -> None: ...


class SimVip:
    """The kernel's view of the VIP (drivers/vip.py)."""

    def __init__(self, node: VipHost) -> None:
        self.node = node

    def is_held(self) -> bool:
        return self.node.vip

    def remove(self) -> None:
        if self.node.vip:
            self.node.trace("VIP removed by the agent")
        self.node.vip = False


class PollHost(Protocol):
    def agent_frozen(self) -> bool: ...

    def peer_api(self) -> tuple[str, dict[str, Any] | None]: ...


class SimPeerPoller(PeerPoller):
    """The real poller, polled by the simulation instead of its thread. A poll that reaches no
    process (a cut link, a host down, a frozen peer) fails after ``timeout``; one refused by a
    host whose agent is gone fails at once; otherwise it returns what the peer agent last
    published, parsed by the real ``parse_view``."""

    def __init__(self, sim: Sim, node: PollHost, **kw: Any) -> None:
        super().__init__(clock=lambda: sim.now, **kw)
        self.sim = sim
        self.node = node
        self.dead = False
        self.missed = False
        self._answer: dict[str, Any] | str = "not polled yet"
        self._src: dict[str, Any] | None = None
        self._parsed: PeerView | None = None

    def fetch(self) -> tuple[dict[str, Any], PeerView]:
        answer = self._answer
        if isinstance(answer, str):
            raise DriverError(f"GET /peer: {answer}")
        # Parsed again only when it says something new, the cycle counter aside (the poller
        # reads that from the view itself; parse_view's result does not depend on it).
        if answer is not self._src and not same_view(answer, self._src):
            self._parsed = parse_view(answer, self.peer_name)
        self._src = answer
        assert self._parsed is not None
        return answer, self._parsed

    def start(self) -> None:
        self.sim.after(LATENCY, self.tick)

    def tick(self) -> None:
        if self.dead:
            return
        if self.node.agent_frozen():
            self.missed = True
            return
        t0 = self.sim.now
        kind, view = self.node.peer_api()
        if kind == "hang":
            self.sim.at(t0 + self.timeout, lambda: self._done("timed out", t0))
        elif kind == "refused":
            self._done("connection refused", t0)
        else:
            assert view is not None
            self._done(view, t0)

    def _done(self, answer: dict[str, Any] | str, t0: float) -> None:
        if self.dead:
            return
        if self.node.agent_frozen():
            self.missed = True
            return
        self._answer = answer
        if self.poll_once():
            self.on_change()
        self.sim.at(max(self.sim.now, t0 + self.interval), self.tick)

    def resume(self) -> None:
        if self.missed and not self.dead:
            self.missed = False
            self.tick()
