"""The northbound client: esclab/writer.py's loop, writing through "the VIP".

"The VIP" is the node that last announced it (a gratuitous ARP: keepalived becoming MASTER,
its second burst 1 s later, or a MASTER answering a lower-priority advert). A request to a
node that does not hold the VIP in its kernel is lost and times out; after ``ARP_STALE_S`` of
that the client's ARP entry is re-resolved to a node that holds it. Each write has its own
transaction id and is retried with the same id until acknowledged (``timeout`` per request,
``interval / 2`` between attempts), and the next write starts ``interval`` after the last one
started. Every acknowledgement is recorded, with what the acknowledging side looked like.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import wal
from .wal import Rec

if TYPE_CHECKING:
    from .node import Node
    from .pair import World

ARP_STALE_S = 5.0  # neighbour entry: DELAY + PROBE before it is resolved again
TIMEOUT_S = 1.0  # writer.py --timeout


@dataclass(frozen=True)
class Ack:
    write: str
    node: str
    at: float
    rec: Rec
    how: str
    alone: bool  # the peer did not have the record when it was acknowledged
    asynchronous: bool  # the acknowledging primary had synchronous_standby_names = ''
    reported: bool  # ... and its agent had recorded the peer as outdated (DEGRADED shown)
    peer_newer: bool  # the peer was then a primary on a newer timeline (a split brain)
    peer_visible: bool  # the acknowledging agent could have seen its peer (peer API up)
    visible_for: float = 0.0  # ... for this many seconds without a break

    def __str__(self) -> str:
        flags = [
            f for f, on in (
                ("alone", self.alone), ("async", self.asynchronous),
                ("degraded", self.reported), ("peer-newer", self.peer_newer),
                (f"peer-visible {self.visible_for:.3f}s", self.peer_visible),
            ) if on
        ]  # fmt: skip
        return f"{self.write} acked by {self.node} at {self.at:.3f} ({self.how}; {' '.join(flags)})"


class Client:
    def __init__(self, world: World, interval: float) -> None:
        self.world = world
        self.sim = world.sim
        self.interval = interval
        self.target: str | None = None
        self.n = 0
        self.started_at = 0.0
        self._token = 0
        self._live = False
        self._bad_since: float | None = None
        self.acks: list[Ack] = []
        self.attempts = 0

    def start(self, at: float) -> None:
        self.sim.at(at, self._next)

    def garp(self, node: str) -> None:
        if self.target != node:
            self.world.trace("client", f"follows {node} (gratuitous ARP)")
        self.target = node
        self._bad_since = None

    def _route(self) -> Node | None:
        nodes = self.world.nodes
        t = next((n for n in nodes if n.name == self.target), None)
        if t is not None and t.vip and t.host_up:
            self._bad_since = None
            return t
        now = self.sim.now
        if self._bad_since is None:
            self._bad_since = now
        if now - self._bad_since >= ARP_STALE_S:
            holders = [n for n in nodes if n.vip and n.host_up]
            if holders:
                self.world.trace("client", f"follows {holders[0].name} (ARP resolved again)")
                self.target, self._bad_since = holders[0].name, None
                return holders[0]
        return None

    def _next(self) -> None:
        self.n += 1
        self.started_at = self.sim.now
        self._send()

    def _send(self) -> None:
        self._token += 1
        self._live = True
        self.attempts += 1
        token = self._token
        write = f"w{self.n}"
        self.sim.after(TIMEOUT_S, lambda: self._timeout(token))
        node = self._route()
        if node is None or node.manager is None:
            return  # lost, or nothing listening on a host that has the address: times out
        node.manager.write(
            write, lambda ok, how, rec: self._reply(token, node, write, ok, how, rec)
        )

    def _reply(
        self, token: int, node: Node, write: str, ok: bool, how: str, rec: Rec | None
    ) -> None:
        if token != self._token or not self._live:
            return  # the client gave up on that request
        self._live = False
        if not ok or rec is None:
            self.sim.after(self.interval / 2, self._send)
            return
        peer = node.peer.pg
        ack = Ack(
            write=write,
            node=node.name,
            at=self.sim.now,
            rec=rec,
            how=how,
            alone=peer.tip is None or not wal.contains(rec, peer.tip),
            asynchronous=not node.pg.sync_names,
            reported=node.agent is not None and node.agent.mem.peer_outdated_from is not None,
            peer_newer=peer.running
            and not peer.standby_mode
            and peer.tip is not None
            and peer.tip.tli > rec.tli,
            peer_visible=node.peer_api()[0] == "ok",
            visible_for=self.world.peer_visible_for(node),
        )
        self.acks.append(ack)
        self.world.on_ack(ack)
        self.sim.at(max(self.sim.now, self.started_at + self.interval), self._next)

    def _timeout(self, token: int) -> None:
        if token == self._token and self._live:
            self._live = False
            self.sim.after(self.interval / 2, self._send)
