"""The simulated clock: one event heap, run in (time, insertion) order, so a run is a pure
function of its schedule and seed.

A driver call that takes time in reality (a status query on a frozen server, a rewind) calls
:meth:`Sim.block`: the rest of the world runs on while the calling agent is stuck in the call.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable

Event = Callable[[], None]
MAX_EVENTS = 400_000  # per run: more means a zero-time loop in the model or in the agents


class SimError(Exception):
    """The simulation itself went wrong (not a finding about the pair)."""


class Sim:
    def __init__(self) -> None:
        self.now = 0.0
        self._heap: list[tuple[float, int, Event]] = []
        self._seq = 0
        self.events = 0

    def at(self, t: float, fn: Event) -> None:
        heapq.heappush(self._heap, (max(t, self.now), self._seq, fn))
        self._seq += 1

    def after(self, dt: float, fn: Event) -> None:
        self.at(self.now + dt, fn)

    def step(self) -> bool:
        """Run the next event; False if there is none."""
        if not self._heap:
            return False
        t, _, fn = heapq.heappop(self._heap)
        self.now = max(self.now, t)
        self.events += 1
        if self.events > MAX_EVENTS:
            raise SimError(f"more than {MAX_EVENTS} events: a zero-time loop?")
        fn()
        return True

    def run_until(self, t_end: float) -> None:
        heap = self._heap
        while heap and heap[0][0] <= t_end:
            self.step()
        self.now = max(self.now, t_end)

    def block(
        self,
        seconds: float,
        stuck: Callable[[], bool] = lambda: False,
        until: Callable[[], bool] | None = None,
    ) -> bool:
        """The caller is stuck for ``seconds``, or until ``until()`` holds (a frozen peer
        answering after all), and then for as long as ``stuck()`` says (its own process is
        frozen); everything else runs on meanwhile. True if ``until()`` ended it. Re-entrant:
        a blocked call inside another one can make the outer one return late, never early."""
        end = self.now + seconds
        heap = self._heap
        done = False
        while heap and heap[0][0] <= end:
            if until is not None and until():
                done = True
                break
            self.step()
        else:
            done = until is not None and until()
            self.now = max(self.now, end) if not done else self.now
        while stuck() and self.step():
            pass
        return done


class Timer:
    """One pending deadline with lazy cancellation: re-arming or cancelling costs no heap work
    beyond one push; a stale heap entry finds its generation changed and does nothing."""

    def __init__(self, sim: Sim, fire: Event) -> None:
        self.sim = sim
        self.fire = fire
        self.deadline: float | None = None
        self._gen = 0

    def set(self, t: float) -> None:
        self._gen += 1
        self.deadline = t
        gen = self._gen
        self.sim.at(t, lambda: self._maybe(gen))

    def cancel(self) -> None:
        self._gen += 1
        self.deadline = None

    @property
    def armed(self) -> bool:
        return self.deadline is not None

    def _maybe(self, gen: int) -> None:
        if gen == self._gen:
            self.deadline = None
            self.fire()
