"""The quorum keeper: this node's etcd lease and the pair's two keys, kept on a thread of its
own so that an etcd call that waits (a member cut off, the quorum lost) never blocks the
agent's cycle. The cycle reads :meth:`QuorumKeeper.view` and says what it wants.

The two keys, as Patroni keeps them:

- ``<prefix>/leader``: the node that may serve, written with a lease only if absent. Its
  holder renews the lease every ``ttl / 4`` s. etcd deletes the key when the lease runs out,
  so a node that creates it knows that the previous holder's lease has ended in etcd.
- ``<prefix>/sync``: the pair's record (``esc.model.SyncRecord``, as JSON ``{"primary": ...,
  "sync": ...}``): the primary and the standby that has every write it acknowledged. Only a
  node named there may take the leader key (``esc.core.quorum``); the holder changes it with a
  compare-and-swap from the revision it read that also requires the leader key to be still on
  its lease, and drops its standby from synchronous replication only once that swap has
  succeeded. A value that is not such a record is read as naming nobody (an operator's
  repair: ``escadm ha force-primary``).

``view().serve_until`` is when the holder must have stopped serving: the send time of the
last renewal etcd answered, plus the TTL it granted, minus ``margin`` (clock rates and the time
to deactivate). etcd cannot expire the lease before that instant as this node measures it: the
renewal was received after it was sent.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from esc.drivers.etcd import EtcdClient, Kv
from esc.errors import QuorumError
from esc.model import QuorumObs, SyncRecord

log = logging.getLogger(__name__)


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
    error: str = ""  # why the last call failed, for status


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
        """``ttl``: the lease, renewed every ttl/4 s; ``margin``: how long before the lease
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
        self.clock = clock
        self._lock = threading.Lock()
        self._view = QuorumView()
        self._want_leader = False
        self._want_sync: tuple[SyncRecord, int] | None = None  # (record, from revision)
        self._lease = 0
        self._seen_bad = ""
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
            self._wake.wait(self.ttl / 4 if self._lease else self.poll_s)
            self._wake.clear()

    def step(self) -> None:
        """One round: renew or resign, campaign if the key is free, the record's swap, then
        read both keys."""
        with self._lock:
            want, want_sync = self._want_leader, self._want_sync
        until = self._view.serve_until if self._lease else 0.0
        if self._lease and want:
            r = self.client.keepalive(self._lease)
            if r.ttl <= 0:  # 0, or -1 from some versions: expired or revoked in etcd
                log.warning("quorum: lease %x is gone (expired in etcd)", self._lease)
                self._lease, until = 0, 0.0
            else:
                until = r.expires - self.margin
        elif self._lease and not want:
            lease, self._lease, until = self._lease, 0, 0.0
            self._revoke(lease)
        leader = self.client.get(self.leader_key)
        if want and not self._lease and leader is None:
            lease, r = self.client.grant(self.ttl)
            won, leader = self.client.swap(self.leader_key, self.node, 0, lease)
            if won:
                self._lease, until = lease, r.expires - self.margin
                log.info("quorum: %s holds the leader key (lease %x)", self.node, lease)
                leader = self.client.get(self.leader_key)
            else:
                self._revoke(lease)
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
                leader=leader.value if leader is not None else None,
                holder=holder and until > self.clock(),
                serve_until=until if holder else 0.0,
                sync=record,
                sync_revision=sync.mod_revision if sync is not None else 0,
                looked_at=self.clock(),
            )
            changed = (was.reachable, was.leader, was.holder, was.sync) != (
                True,
                self._view.leader,
                self._view.holder,
                self._view.sync,
            )
        if changed:
            self.on_change()
