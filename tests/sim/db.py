"""PostgreSQL 15 on both nodes, as the agent's driver (drivers/postgres/) and the manager see
it: roles, timelines, LSNs, synchronous commit, WAL streaming, promote, rewind, clone.

Modelled:

- a commit is durable locally at once and acknowledged when the synchronous standby has it,
  or at once when ``synchronous_standby_names`` is empty; a waiting commit is released by a
  standby that catches up or by emptying the setting (``DropSync``), and fails if the server
  stops; a second request for the same transaction id waits for the first (the manager's
  ``INSERT ... ON CONFLICT``) and then answers with it;
- a standby streams from its ``primary_conninfo`` when its history is on the source's
  timeline history (the WAL receiver's check, by timeline id and switch point, not by
  content); streaming is instant while the connection is alive; a cut link, or a frozen
  server, leaves a dead connection that both sides still report as streaming (and the primary
  as its synchronous standby) until ``wal_sender_timeout``/``wal_receiver_timeout`` (5 s); a
  server that exits while its host is up resets the connection at once; the WAL receiver
  retries every ``wal_retrieve_retry_interval`` (1 s);
- promote opens timeline max + 1 (PostgreSQL looks for the newest timeline it knows of);
- the agent's driver for it, with follow, is pgdriver.py.

Not modelled: replication slots and lost WAL, replay lag (replay is instant), the manager's
own transactions (each client write is one record).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from esc.model import DbRole, DbStatus

from . import wal
from .clock import Sim, Timer
from .network import Network
from .wal import Rec

TIMEOUT = 5.0  # wal_sender_timeout, wal_receiver_timeout (and the standby's TCP keepalives)
RETRY = 1.0  # wal_retrieve_retry_interval
STATUS_WATCHDOG_S = 1.5  # esc.drivers.postgres.settings.STATUS_WATCHDOG_S
SESSION_TIMEOUT_S = 5.0  # a session on a frozen server (statement_timeout 5 s)
CONNECT_TIMEOUT_S = 3.0  # _peer_session: connect_timeout=3 through a dropping link
INITDB_S, START_S, STOP_S, PROMOTE_S = 1.0, 0.3, 0.1, 0.05
CHECKPOINT_S, REWIND_S, CLONE_S = 0.05, 0.8, 2.0


class PgHost(Protocol):
    name: str
    host_up: bool

    def pg_frozen(self) -> bool: ...

    def trace(self, text: str) -> None: ...


@dataclass
class Dump:
    """A diverged/ file: writes this node had that the new primary lacked."""

    node: str
    at: float
    writes: tuple[str, ...]


@dataclass
class Pending:
    rec: Rec
    waiters: list[Callable[[bool], None]] = field(default_factory=list)


class Conn:
    """One WAL stream: ``standby`` receives from ``source``. Each end may already have let go
    of it (``s_side``/``p_side``) while the other still believes in it."""

    def __init__(self, cluster: Cluster, standby: Postgres, source: Postgres) -> None:
        self.standby = standby
        self.source = source
        self.s_side = self.p_side = True
        self.alive = False
        self.timer = Timer(cluster.sim, lambda: cluster.drop(self))


class Cluster:
    """The two servers and the WAL streams between them."""

    def __init__(self, sim: Sim, net: Network) -> None:
        self.sim = sim
        self.net = net
        self.servers: dict[str, Postgres] = {}
        self.conns: list[Conn] = []
        self.by_write: dict[str, list[Rec]] = {}
        self.tli_origin: dict[int, Rec] = {}
        self.reused: list[str] = []  # timeline ids opened twice (invariants.py, 5)
        self.anomalies: list[str] = []  # what the model cannot continue from
        net.listeners.append(self.refresh)

    def add(self, pg: Postgres) -> None:
        self.servers[pg.name] = pg

    def peer(self, pg: Postgres) -> Postgres:
        return next(s for s in self.servers.values() if s is not pg)

    def linked(self, a: Postgres, b: Postgres) -> bool:
        return self.net.both(a.name, b.name, "repl")

    # --- connections -------------------------------------------------------------------

    def connect(self, standby: Postgres, source: Postgres) -> None:
        c = Conn(self, standby, source)
        self.conns.append(c)
        standby.recv = c
        source.senders.append(c)
        self._refresh(c)

    def refresh(self) -> None:
        for c in list(self.conns):
            self._refresh(c)

    def _refresh(self, c: Conn) -> None:
        if not (c.s_side and c.p_side):
            # The end that let go resets the connection as soon as the other can hear it.
            gone, other = (c.standby, c.source) if not c.s_side else (c.source, c.standby)
            if self.linked(c.standby, c.source) and gone.host.host_up and other.usable:
                self.drop(c)
            elif not c.timer.armed:
                c.alive = False
                c.timer.set(self.sim.now + TIMEOUT)
            return
        ok = self.linked(c.standby, c.source) and c.standby.usable and c.source.usable
        if ok and not c.alive:
            c.alive = True
            c.timer.cancel()
            self.stream(c.source)
        elif not ok and (c.alive or not c.timer.armed):
            c.alive = False
            c.timer.set(self.sim.now + TIMEOUT)

    def let_go(self, c: Conn, standby_end: bool) -> None:
        if standby_end:
            c.s_side = False
            if c.standby.recv is c:
                c.standby.recv = None
        else:
            c.p_side = False
            if c in c.source.senders:
                c.source.senders.remove(c)
        if c.s_side or c.p_side:
            self._refresh(c)
        else:
            self.drop(c)

    def drop(self, c: Conn) -> None:
        c.timer.cancel()
        c.alive = False
        if c in self.conns:
            self.conns.remove(c)
        if c.s_side and c.standby.recv is c:
            c.standby.recv = None
            c.standby.receiver_lost()
        if c in c.source.senders:
            c.source.senders.remove(c)

    def stream(self, src: Postgres, seen: frozenset[str] = frozenset()) -> None:
        """Instant streaming: every live standby of ``src`` (and theirs) has what it has. Two
        standbys may follow each other (each told to follow the other), as real PostgreSQL
        cascades; WAL goes round such a loop once."""
        seen = seen | {src.name}
        for c in src.senders:
            if c.alive and src.tip is not None and c.standby.name not in seen:
                c.standby.tip = src.tip
                self.stream(c.standby, seen)
        src.release()


class Postgres:
    """One node's server and data directory (they outlive the agent)."""

    def __init__(self, cluster: Cluster, host: PgHost, default_sync: str) -> None:
        self.cluster = cluster
        self.sim = cluster.sim
        self.host = host
        self.name = host.name
        self.default_sync = default_sync
        self.tip: Rec | None = None
        self.standby_mode = False  # standby.signal
        self.source: str | None = None  # primary_conninfo
        self.sync_names = default_sync
        self.running = False
        self.clean = True  # last shut down cleanly (else: crash recovery, or "in recovery")
        self.recv: Conn | None = None
        self.senders: list[Conn] = []
        self.pending: list[Pending] = []
        self.dumps: list[Dump] = []
        self.retry = Timer(self.sim, self._attempt)
        cluster.add(self)

    @property
    def role(self) -> DbRole:
        if self.tip is None:
            return DbRole.ABSENT
        if not self.running:
            return DbRole.STOPPED
        return DbRole.STANDBY if self.standby_mode else DbRole.PRIMARY

    @property
    def usable(self) -> bool:
        return self.running and self.host.host_up and not self.host.pg_frozen()

    def named(self, standby: str) -> bool:
        return f'"{standby}"' in self.sync_names

    # --- what the status query returns --------------------------------------------------

    def status(self) -> DbStatus:
        tip = self.tip
        role = self.role
        if tip is None or role is DbRole.STOPPED:
            return DbStatus(role)
        if role is DbRole.STANDBY:
            return DbStatus(
                role,
                tip.tli,
                tip.lsn,
                receive_lsn=tip.lsn,
                streaming=self.recv is not None,
                sync_names=self.sync_names,
            )
        names = tuple(c.standby.name for c in self.senders)
        sync = next((n for n in names if self.sync_names and self.named(n)), None)
        return DbStatus(
            role,
            tip.tli,
            tip.lsn,
            sync_standby=sync,
            sync_names=self.sync_names,
            streaming_to=names,
        )

    # --- server life --------------------------------------------------------------------

    def initdb(self) -> None:
        self.tip = wal.root()
        self.cluster.tli_origin.setdefault(1, self.tip)
        self.standby_mode, self.source, self.sync_names = False, None, self.default_sync
        self.start()

    def start(self) -> None:
        if self.running or self.tip is None:
            return
        self.running = True
        self.clean = False
        self.host.trace(f"postgres started as {self.role.value} (tl{self.tip.tli})")
        if self.standby_mode:
            self.retry.set(self.sim.now + 0.05)

    def stop(self, clean: bool = True) -> None:
        """Stop (clean) or crash; with the host down the peer hears nothing."""
        if not self.running:
            return
        self.running = False
        self.clean = clean
        self.retry.cancel()
        for p in self.pending:
            for w in p.waiters:
                w(False)
        self.pending = []
        if self.recv is not None:
            self.cluster.let_go(self.recv, standby_end=True)
        for c in list(self.senders):
            self.cluster.let_go(c, standby_end=False)
        self.host.trace("postgres " + ("stopped" if clean else "crashed"))

    def receiver_lost(self) -> None:
        if self.running and self.standby_mode:
            self.retry.set(self.sim.now + RETRY)

    def _attempt(self) -> None:
        """The WAL receiver (re)connects to ``source``."""
        if not (self.running and self.standby_mode and self.recv is None) or self.tip is None:
            return
        src = self.cluster.servers.get(self.source or "")
        ok = (
            src is not None
            and src.tip is not None
            and self.usable
            and src.usable
            and self.cluster.linked(self, src)
        )
        if ok and src is not None and src.tip is not None:
            if wal.contains(self.tip, src.tip):
                self.cluster.connect(self, src)
                return
            if _history_allows(self.tip, src.tip):
                self.cluster.anomalies.append(
                    f"{self.name} would stream from {src.name} over diverged WAL (same "
                    f"timeline ids, different records: {self.tip!r} vs {src.tip!r})"
                )
        self.retry.set(self.sim.now + RETRY)

    def promote(self, above_timeline: int = 0) -> None:
        assert self.tip is not None
        if self.recv is not None:
            self.cluster.let_go(self.recv, standby_end=True)
        self.retry.cancel()
        # PostgreSQL: after the newest timeline it has a history file for; the driver
        # reserves each the peer reported (PostgresDriver.promote).
        tli = max(*(t for t, _ in self.tip.hist), above_timeline) + 1
        rec = wal.promoted(self.tip, tli)
        first = self.cluster.tli_origin.setdefault(tli, rec)
        if first is not rec:
            self.cluster.reused.append(
                f"{self.name} promoted to timeline {tli} at depth {rec.depth}, an id the "
                f"history through {first!r} already uses: the two cannot be told apart"
            )
        self.tip = rec
        self.standby_mode, self.source = False, None
        self.host.trace(f"postgres promoted: timeline {tli} at depth {rec.depth}")
        self.release()

    # --- writes ---------------------------------------------------------------------------

    def find(self, write: str) -> Rec | None:
        if self.tip is None:
            return None
        for r in reversed(self.cluster.by_write.get(write, ())):
            if wal.contains(r, self.tip):
                return r
        return None

    def commit(self, write: str) -> tuple[Rec, Pending | None]:
        assert self.tip is not None
        rec = Rec(self.tip, self.tip.tli, write)
        self.cluster.by_write.setdefault(write, []).append(rec)
        self.tip = rec
        self.cluster.stream(self)
        if self.synced():
            return rec, None
        p = Pending(rec)
        self.pending.append(p)
        return rec, p

    def wait_for_sync(self, rec: Rec) -> Pending | None:
        """A commit that writes no record of its own but waits like one (nothing to wait for
        when synchronous: the WAL up to the tip is on the standby)."""
        if self.synced():
            return None
        p = Pending(rec)
        self.pending.append(p)
        return p

    def pending_for(self, rec: Rec) -> Pending | None:
        return next((p for p in self.pending if p.rec is rec), None)

    def synced(self) -> bool:
        if not self.sync_names:
            return True
        return any(c.alive and self.named(c.standby.name) for c in self.senders)

    def release(self) -> None:
        if self.pending and self.role is DbRole.PRIMARY and self.synced():
            done, self.pending = self.pending, []
            for p in done:
                for w in p.waiters:
                    w(True)

    def set_sync(self, value: str) -> None:
        self.sync_names = value
        self.release()


def _history_allows(standby: Rec, source: Rec) -> bool:
    """The WAL receiver's check: the standby's timeline is on the source's history and the
    standby is not past the point where the source left it."""
    tli = standby.hist[-1][0]
    hist = source.hist
    for i, (t, _) in enumerate(hist):
        if t == tli:
            end = hist[i + 1][1] - 1 if i + 1 < len(hist) else source.depth
            return standby.depth <= end
    return False
