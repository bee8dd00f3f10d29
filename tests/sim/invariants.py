"""What must hold, checked while a schedule runs and at its end.

1. **No acknowledged write is lost**: at the end, every write the client saw acknowledged is
   in the data of the node that serves, except what the configuration allows and reports
   (``available_risk``): under policy ``available`` a primary that lost its standby
   acknowledges alone after the grace, showing DEGRADED; if it could not see its peer at that
   moment (the peer API cut or the peer's agent not answering, or answering again for less
   than the time an agent needs to hear it, ``detect_s``) and the peer promoted and served,
   those writes end up in the loser's diverged dump, not in the database (issue 14, part A,
   second bullet: documented in docs/operations.md, not a bug).
2. **No two nodes acknowledge writes on diverging histories**, unless the configuration allows
   it and it is reported. Two histories can only both carry acknowledged writes if at least one
   of them was acknowledged *alone* (the peer lacked the record), so this is checked on every
   acknowledgement: one given alone must be allowed (policy ``available``, synchronous
   replication dropped) and reported (the node shows DEGRADED: the peer marked outdated). Forks
   are written to the trace; which side's writes survive is judged by 1.
3. **Convergence**: after the last heal, within ``CONVERGE_S`` (``CONVERGE_S / cycle_s``
   agent cycles), one MASTER (VIP, primary, active service, route, the client's target) and
   one BACKUP streaming from it, synchronous, caught up; stable for ``STABLE_S``.
4. **Agreement**: the state file, the VIP, the anycast route and the service never disagree
   for more than one cycle of the node's agent (checked at the end of its cycles, so a frozen
   or dead agent is not judged; a frozen keepalived or manager cannot obey, a dead or starting
   manager cannot be activated: those are not counted).
5. **One timeline id, one history**: a promotion never opens a timeline id that another history
   already uses. pg_rewind and the WAL receiver compare timeline ids and switch points, not
   records: two histories both called timeline 2 look the same to them, so the loser of such a
   split brain is "not rewound" and replays the other history's WAL over its own.

A failure this simulation finds and that is not fixed at once becomes a named scenario in
test_scenarios.py marked ``xfail(strict=True)``; the random search then fails on it until it is
fixed (there is no tolerance switch: every search enforces every invariant).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import wal
from .client import Ack

if TYPE_CHECKING:
    from .node import Node
    from .pair import World

CONVERGE_S = 45.0  # > hold_down_s (30 s) + the ARP re-resolution (5 s) + a follow
STABLE_S = 1.0


class Violation(AssertionError):
    """An invariant broke. The message holds the schedule, its replay line and the trace."""


class LostAckedWrites(Violation):
    pass


class DivergedAcks(Violation):
    pass


class NoConvergence(Violation):
    pass


class Disagreement(Violation):
    pass


class TimelineReused(Violation):
    pass


def acked_alone_degraded(ack: Ack, policy: str) -> bool:
    """Acknowledged without the standby, as ``available`` allows, and shown as DEGRADED."""
    return policy == "available" and ack.alone and ack.asynchronous and ack.reported


def detect_s(node: Node) -> float:
    """How long after its peer's API starts answering again an agent may still not know what
    the peer says: a poll sent into the cut hangs until its timeout, the next one follows
    after the poll interval, and the answer is acted on at the agent's next cycle."""
    assert node.poller is not None
    return node.peer_timeout + node.poller.interval + node.cfg.agent.cycle_s


def available_risk(ack: Ack, policy: str, dumped: set[str], detect: float) -> bool:
    """Lost as policy ``available`` allows and reports (module docstring, 1): acknowledged
    alone while the peer could not be seen, or had been seen again for less than ``detect``."""
    unseen = not ack.peer_visible or ack.visible_for < detect
    return acked_alone_degraded(ack, policy) and unseen and ack.write in dumped


def disagreement(node: Node) -> str | None:
    state = node.state_file()
    m = node.manager
    answering = m is not None and m.answering
    active = m is not None and m.alive and m.active
    frozen_ka = node.keepalived_frozen()
    if state == "MASTER":
        if answering and not active and not node.manager_frozen():
            return "state MASTER, service inactive"
        if not node.routed:
            return "state MASTER, anycast route withdrawn"
        if not node.vip:
            return "state MASTER without the VIP"
        return None
    if active and not node.manager_frozen():
        return f"state {state or '(none)'}, service active"
    if node.routed:
        return f"state {state or '(none)'}, anycast route announced"
    if node.vip and state != "SWITCHING" and not frozen_ka:
        return f"state {state or '(none)'} with the VIP"
    return None


class Checker:
    def __init__(self, world: World) -> None:
        self.world = world
        self.frontier: Ack | None = None
        self._judged: set[int] = set()
        self._keep: list[wal.Rec | None] = []  # keeps the judged fork points alive (their ids)
        self._since: dict[str, tuple[float, str]] = {}

    def on_ack(self, ack: Ack) -> None:
        if ack.alone and not acked_alone_degraded(ack, self.world.schedule.policy):
            raise DivergedAcks(
                f"acknowledged without the standby, which the configuration does not allow or "
                f"the node does not report: {ack}"
            )
        f = self.frontier
        self.frontier = ack
        if f is None or wal.contains(f.rec, ack.rec) or wal.contains(ack.rec, f.rec):
            return
        base = wal.common(f.rec, ack.rec)
        key = id(base)
        if key not in self._judged:
            self._judged.add(key)
            self._keep.append(base)
            self.world.trace("check", f"acknowledged on diverging histories: {f}; {ack}")

    def after_cycle(self, node: Node, t0: float) -> None:
        why = disagreement(node)
        if why is None:
            self._since.pop(node.name, None)
            return
        since = self._since.setdefault(node.name, (self.world.sim.now, why))
        if t0 - since[0] >= node.cfg.agent.cycle_s:
            raise Disagreement(
                f"{node.name}: {since[1]} since {since[0]:.3f}, still at the end of the cycle "
                f"that started at {t0:.3f}: {why}"
            )

    def lost_writes(self, master: Node) -> tuple[list[Ack], list[Ack]]:
        """Acknowledged writes missing on ``master``: (not allowed, allowed and reported by
        policy ``available``)."""
        assert master.pg.tip is not None
        present = wal.all_writes(master.pg.tip)
        policy = self.world.schedule.policy
        bad: list[Ack] = []
        allowed: list[Ack] = []
        dumps = {n.name: {w for d in n.pg.dumps for w in d.writes} for n in self.world.nodes}
        for a in self.world.client.acks:
            if a.write in present:
                continue
            node = next(n for n in self.world.nodes if n.name == a.node)
            if available_risk(a, policy, dumps[a.node], detect_s(node)):
                allowed.append(a)
            else:
                bad.append(a)
        return bad, allowed
