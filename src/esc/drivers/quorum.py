"""The quorum keeper: this node's etcd lease and the pair's two keys, kept on a thread of its
own so that an etcd call that waits (a member cut off, the quorum lost) never blocks the
agent's cycle. The cycle reads :meth:`QuorumKeeper.view` and says what it wants.

The two keys, as Patroni keeps them:

- ``<prefix>/leader``: the node that may serve, attached to its lease, as JSON
  ``{"node": ..., "ttl": ...}`` (:func:`encode_leader`). Its holder renews
  every ``ttl / 8`` s: a keep-alive of the lease, then the key written again (on the
  condition that it is still on its lease), so every renewal is a new revision the others
  see. A node that wants the key takes it when it is absent, or when the revision it shows has
  not changed for a whole ``ttl`` as this node measured from when it first saw it ("the
  standby waits the full lease after the last renewal it saw"), with a transaction on that
  very revision: a renewal that etcd applied meanwhile makes the takeover fail. It waits the
  longer of its own TTL and the one the holder wrote in the key (hosts configured apart); a
  key without one (written by a holder that renews by keep-alive only) is taken only once
  absent. etcd's own expiry of the lease is the backstop, not the path: it is slower (checked
  every 0.5 s) and a new etcd leader extends every lease by its election timeout, which made a
  failover that also lost the etcd leader take twice as long.
- ``<prefix>/sync``: the pair's record (``esc.model.SyncRecord``, as JSON ``{"primary": ...,
  "sync": ...}``): the primary and the standby that has every write it acknowledged. Only a
  node named there may take the leader key (``esc.core.quorum``); the holder changes it with a
  compare-and-swap from the revision it read that also requires the leader key to be still on
  its lease, and drops its standby from synchronous replication only once that swap has
  succeeded. A value that is not such a record is read as naming nobody (an operator's
  repair: ``escadm ha force-primary``).

``view().serve_until`` is when the holder must have stopped serving: the send time of the
last renewal etcd answered (keep-alive sent first, then the key's write), plus the TTL, minus
``margin`` (clock rates and the time to deactivate). No other node can take the key before
that instant: it first saw that renewal's revision after the renewal was sent, and takes the
key only a whole TTL later; nor can etcd expire the lease, whose TTL counts from when etcd
received the keep-alive.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from esc.config.node import RENEWALS_PER_LEASE
from esc.drivers.etcd import EtcdClient, Kv
from esc.errors import QuorumError
from esc.model import QuorumObs, SyncRecord

log = logging.getLogger(__name__)

# After a failed round the keeper tries again this soon (a holder's lease is running out).
RETRY_S = 0.05


@dataclass(frozen=True)
class QuorumView:
    """The keeper's last look (monotonic times)."""

    reachable: bool = False  # the last etcd call answered
    leader: str | None = None  # the leader key's value, None when absent (or not known)
    holder: bool = False  # this node holds the leader key under a live lease
    serve_until: float = 0.0  # holder: stop serving before this
    sync: SyncRecord | None = None  # the pair's record (None: absent)
    sync_revision: int = 0  # its mod revision (0: absent)
    looked_at: float = 0.0  # when this view was read
    takeover_at: float = math.inf  # not a holder: when it may take the key (free: at once)
    error: str = ""  # why the last call failed, for status


def encode_leader(node: str, ttl: int) -> str:
    """The leader key's value: its holder, and the TTL its renewals keep (how long the others
    wait after the last one they saw)."""
    return json.dumps({"node": node, "ttl": ttl}, sort_keys=True)


def decode_leader(value: str) -> tuple[str, int | None]:
    """(holder, its TTL); a value that is not ours names its holder as is, with no TTL: such a
    key is taken only once etcd has expired it."""
    try:
        data = json.loads(value)
    except ValueError:
        return value, None
    if isinstance(data, dict) and isinstance(data.get("node"), str):
        ttl = data.get("ttl")
        ok = isinstance(ttl, int) and not isinstance(ttl, bool) and 0 < ttl <= 3600
        return data["node"], ttl if ok else None
    return value, None


def encode_record(rec: SyncRecord) -> str:
    return json.dumps({"primary": rec.primary, "sync": rec.sync}, sort_keys=True)


def decode_record(value: str) -> SyncRecord:
    """The record in the sync key; anything else names nobody (logged by the caller)."""
    try:
        data = json.loads(value)
    except ValueError:
        data = None
    if (
        isinstance(data, dict)
        and isinstance(data.get("primary"), str)
        and isinstance(data.get("sync", ""), str)
    ):
        return SyncRecord(data["primary"], data.get("sync", ""))
    return SyncRecord("", "")


class QuorumKeeper:
    def __init__(
        self,
        client: EtcdClient,
        node: str,
        ttl: int = 6,
        margin: float = 1.0,
        prefix: str = "/esc",
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[], None] = lambda: None,
        poll_s: float = 0.2,
    ) -> None:
        """``ttl``: the lease, renewed every ttl/8 s; ``margin``: how long before the lease
        can end the holder stops counting on it; ``poll_s``: how often a node that does not
        hold the key looks (and campaigns); ``on_change``: called when the view changes (it
        wakes the agent's cycle)."""
        if ttl < 2 or margin <= 0 or margin >= ttl / 2:
            raise ValueError(
                f"ttl {ttl} s with margin {margin} s: need ttl >= 2, 0 < margin < ttl/2"
            )
        self.client, self.node, self.ttl, self.margin = client, node, ttl, margin
        self.on_change, self.poll_s = on_change, poll_s
        self.leader_key, self.sync_key = f"{prefix}/leader", f"{prefix}/sync"
        self._value = encode_leader(node, ttl)
        self.clock = clock
        self._lock = threading.Lock()
        self._view = QuorumView()
        self._want_leader = False
        self._want_sync: tuple[SyncRecord, int] | None = None  # (record, from revision)
        self._lease = 0
        self._seen_bad = ""
        self._seen: tuple[int, float] = (0, 0.0)  # the leader key's revision, first seen at
        self._leader_ttl: float | None = None  # how long to wait on it (None: until absent)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    # --- what the cycle uses -------------------------------------------------------------------

    def view(self) -> QuorumView:
        with self._lock:
            v = self._view
        if v.holder and self.clock() >= v.serve_until:
            return replace(v, holder=False)  # the keeper is stuck: the lease may be gone
        return v

    def observe(self) -> QuorumObs:
        """The view as the cycle reads it (``esc.drivers.base.Quorum``)."""
        v = self.view()
        return QuorumObs(
            reachable=v.reachable,
            holder=v.holder,
            leader=v.leader,
            sync=v.sync,
            sync_revision=v.sync_revision,
            serve_left=max(0.0, v.serve_until - self.clock()) if v.holder else 0.0,
            error=v.error,
            takeover_in=math.inf if v.holder else max(0.0, v.takeover_at - self.clock()),
        )

    def want_leader(self, want: bool) -> None:
        """Campaign for the leader key (and keep it), or resign it."""
        with self._lock:
            changed = want != self._want_leader
            self._want_leader = want
            if not want:  # no longer a holder from now on, before the lease is revoked
                self._view = replace(self._view, holder=False, serve_until=0.0)
        if changed:
            self._wake.set()

    def record_sync(self, record: SyncRecord, from_revision: int) -> None:
        """Swap the record to ``record`` from ``from_revision`` (what the view showed); the
        view shows the outcome. Only a holder's request is carried out."""
        with self._lock:
            if self._want_sync == (record, from_revision):
                return
            self._want_sync = (record, from_revision)
        self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="quorum", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.want_leader(False)
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(10)
        if self._lease:
            try:
                self.client.revoke(self._lease)  # a planned stop hands the key over at once
            except QuorumError as exc:
                log.info("quorum: lease not revoked (%s); it runs out by itself", exc)
            self._lease = 0

    # --- the thread --------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
            except QuorumError as exc:
                with self._lock:
                    was = self._view
                    self._view = replace(was, reachable=False, error=str(exc))
                if was.reachable:
                    log.warning("quorum: etcd unreachable: %s", exc)
                    self.on_change()
                self._wake.wait(RETRY_S)  # (never 0: a fast error must not spin)
            else:
                self._wake.wait(self._pause())
            self._wake.clear()

    def step(self) -> None:
        """One round: renew or resign, take the key if it is free or stale, the record's
        swap, then read both keys."""
        with self._lock:
            want, want_sync = self._want_leader, self._want_sync
        until = self._view.serve_until if self._lease else 0.0
        if self._lease and want:
            r = self.client.keepalive(self._lease)
            if r.ttl <= 0:  # 0, or -1 from some versions: expired or revoked in etcd
                log.warning("quorum: lease %x is gone (expired in etcd)", self._lease)
                self._lease, until = 0, 0.0
            elif self.client.refresh(self.leader_key, self._value, self._lease):
                until = r.sent + min(r.ttl, self.ttl) - self.margin
            else:
                log.warning("quorum: the leader key is no longer on lease %x", self._lease)
                lease, self._lease, until = self._lease, 0, 0.0
                self._revoke(lease)
        elif self._lease and not want:
            lease, self._lease, until = self._lease, 0, 0.0
            self._revoke(lease)
        leader = self._read_leader()
        if want and not self._lease and (leader is None or self._stale_for(leader) <= 0):
            lease, r = self.client.grant(self.ttl)
            rev = leader.mod_revision if leader is not None else 0
            won, _ = self.client.swap(self.leader_key, self._value, rev, lease)
            if won:
                self._lease, until = lease, r.sent + min(r.ttl, self.ttl) - self.margin
                how = "took the stale" if leader is not None else "holds the"
                log.info("quorum: %s %s leader key (lease %x)", self.node, how, lease)
            else:
                self._revoke(lease)
            leader = self._read_leader()
        holder = bool(self._lease) and leader is not None and leader.lease == self._lease
        if want_sync is not None and holder:
            rec, rev = want_sync
            held = (self.leader_key, self._lease)
            done, _ = self.client.swap(self.sync_key, encode_record(rec), rev, while_held=held)
            if done:
                log.info("quorum: recorded primary %s, sync %s", rec.primary, rec.sync or "none")
        if want_sync is not None:
            with self._lock:  # carried out or refused (not ours to change, or stale)
                if self._want_sync == want_sync:
                    self._want_sync = None
        sync = self.client.get(self.sync_key)
        self._publish(leader, holder, until, sync)

    def _read_leader(self) -> Kv | None:
        """The leader key, noting when this keeper first saw its current revision: the clock
        read after the answer came, so after the write that made the revision was sent."""
        leader = self.client.get(self.leader_key)
        rev = leader.mod_revision if leader is not None else 0
        if rev != self._seen[0]:
            self._seen = (rev, self.clock())
        wait = self._wait_for(leader) if leader is not None else math.inf
        self._leader_ttl = wait if wait < math.inf else None
        return leader

    def _wait_for(self, leader: Kv) -> float:
        """How long after first seeing a revision of ``leader`` this keeper waits before it
        takes the key: the longer of the two TTLs; inf for a key that does not say its TTL."""
        _, ttl = decode_leader(leader.value)
        return math.inf if ttl is None else float(max(self.ttl, ttl))

    def _stale_for(self, leader: Kv) -> float:
        """Seconds until ``leader`` (another lease's key) may be taken: a whole TTL after this
        keeper first saw its revision unchanged."""
        if leader.mod_revision != self._seen[0]:
            return self._wait_for(leader)
        return self._seen[1] + self._wait_for(leader) - self.clock()

    def _pause(self) -> float:
        """How long the thread sleeps: a holder until its next renewal; a node that wants
        the key until its next look, or until the key it sees turns stale."""
        if self._lease:
            return self.ttl / RENEWALS_PER_LEASE
        with self._lock:
            want = self._want_leader
        rev, seen = self._seen
        if want and rev and self._leader_ttl is not None:
            return max(0.0, min(self.poll_s, seen + self._leader_ttl - self.clock()))
        return self.poll_s

    def _revoke(self, lease: int) -> None:
        """Revoke a lease this keeper no longer uses. It is forgotten first: a revoke that
        fails (etcd unreachable, the lease already expired) is not retried, the lease runs out
        by itself (a keeper stuck retrying it would never campaign again)."""
        try:
            self.client.revoke(lease)
        except QuorumError as exc:
            log.info("quorum: lease %x not revoked (%s); it runs out by itself", lease, exc)

    def _publish(self, leader: Kv | None, holder: bool, until: float, sync: Kv | None) -> None:
        record = decode_record(sync.value) if sync is not None else None
        if record == SyncRecord("", "") and sync is not None and sync.value != self._seen_bad:
            self._seen_bad = sync.value
            log.error("quorum: the sync key holds %r, not a record: it names nobody", sync.value)
        with self._lock:
            holder = holder and self._want_leader  # resigned meanwhile: the lease is going
            was = self._view
            self._view = QuorumView(
                reachable=True,
                leader=decode_leader(leader.value)[0] if leader is not None else None,
                holder=holder and until > self.clock(),
                serve_until=until if holder else 0.0,
                sync=record,
                sync_revision=sync.mod_revision if sync is not None else 0,
                looked_at=self.clock(),
                takeover_at=(
                    self.clock()
                    if leader is None
                    else math.inf
                    if holder
                    else self._seen[1] + self._wait_for(leader)
                ),
            )
            changed = (was.reachable, was.leader, was.holder, was.sync) != (
                True,
                self._view.leader,
                self._view.holder,
                self._view.sync,
            )
        if changed:
            self.on_change()
