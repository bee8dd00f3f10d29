"""The quorum keeper: this node's etcd lease and the pair's two keys, kept on a thread of its
own so that an etcd call that waits (a member cut off, the quorum lost) never blocks the
agent's cycle. The cycle reads :meth:`QuorumKeeper.view` and says what it wants.

The two keys, as Patroni keeps them:

- ``<prefix>/leader``: the node that may serve, written with a lease only if absent. Its
  holder renews the lease every ``ttl / 3`` s. etcd deletes the key when the lease runs out,
  so a node that creates it knows that the previous holder's lease has ended in etcd.
- ``<prefix>/sync``: the node recorded as the synchronous standby. Only a node named there may
  take the leader key to promote; the primary changes it with a compare-and-swap from the
  revision it read, and drops its standby from synchronous replication only once that swap
  has succeeded.

``view().serve_until`` is when the holder must have stopped serving: the send time of the
last renewal etcd answered, plus the TTL it granted, minus ``margin`` (clock rates and the time
to deactivate). etcd cannot expire the lease before that instant as this node measures it: the
renewal was received after it was sent.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from esc.drivers.etcd import EtcdClient, Kv
from esc.errors import QuorumError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QuorumView:
    """The keeper's last look (monotonic times)."""

    reachable: bool = False  # the last etcd call answered
    leader: str | None = None  # the leader key's value, None when absent (or not known)
    holder: bool = False  # this node holds the leader key under a live lease
    serve_until: float = 0.0  # holder: stop serving before this
    sync: str | None = None  # the sync key's value ("" or None: nobody recorded)
    sync_revision: int = 0  # its mod revision (0: absent)
    looked_at: float = 0.0  # when this view was read
    error: str = ""  # why the last call failed, for status


class QuorumKeeper:
    def __init__(
        self,
        client: EtcdClient,
        node: str,
        ttl: int = 6,
        margin: float = 1.0,
        prefix: str = "/esc",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl < 2 or margin <= 0 or margin >= ttl / 2:
            raise ValueError(
                f"ttl {ttl} s with margin {margin} s: need ttl >= 2, 0 < margin < ttl/2"
            )
        self.client, self.node, self.ttl, self.margin = client, node, ttl, margin
        self.leader_key, self.sync_key = f"{prefix}/leader", f"{prefix}/sync"
        self.clock = clock
        self._lock = threading.Lock()
        self._view = QuorumView()
        self._want_leader = False
        self._want_sync: tuple[str, int] | None = None  # (value, from revision)
        self._lease = 0
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

    def want_leader(self, want: bool) -> None:
        """Campaign for the leader key (and keep it), or resign it."""
        with self._lock:
            changed = want != self._want_leader
            self._want_leader = want
            if not want:  # no longer a holder from now on, before the lease is revoked
                self._view = replace(self._view, holder=False, serve_until=0.0)
        if changed:
            self._wake.set()

    def record_sync(self, value: str, from_revision: int) -> None:
        """Swap the sync key to ``value`` from ``from_revision`` (what the view showed); the
        view shows the outcome. Only a holder's request is carried out."""
        with self._lock:
            self._want_sync = (value, from_revision)
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
                    self._view = replace(self._view, reachable=False, error=str(exc))
            self._wake.wait(self.ttl / 3 if self._lease else 0.5)
            self._wake.clear()

    def step(self) -> None:
        """One round: renew or campaign or resign, the sync request, then read the keys."""
        with self._lock:
            want, want_sync = self._want_leader, self._want_sync
        until = 0.0
        if self._lease and want:
            r = self.client.keepalive(self._lease)
            if r.ttl == 0:
                log.warning("quorum: lease %x is gone (expired in etcd)", self._lease)
                self._lease = 0
            else:
                until = r.expires - self.margin
        elif self._lease and not want:
            self.client.revoke(self._lease)
            self._lease = 0
        if want and not self._lease:
            lease, r = self.client.grant(self.ttl)
            won, _ = self.client.swap(self.leader_key, self.node, 0, lease)
            if won:
                self._lease, until = lease, r.expires - self.margin
                log.info("quorum: %s holds the leader key (lease %x)", self.node, lease)
            else:
                self.client.revoke(lease)
        leader = self.client.get(self.leader_key)
        holder = bool(self._lease) and leader is not None and leader.lease == self._lease
        if want_sync is not None and holder:
            self.client.swap(self.sync_key, want_sync[0], want_sync[1])
            with self._lock:
                if self._want_sync == want_sync:
                    self._want_sync = None
        elif want_sync is not None:
            with self._lock:
                self._want_sync = None  # not ours to change
        sync = self.client.get(self.sync_key)
        self._publish(leader, holder, until, sync)

    def _publish(self, leader: Kv | None, holder: bool, until: float, sync: Kv | None) -> None:
        with self._lock:
            holder = holder and self._want_leader  # resigned meanwhile: the lease is going
            self._view = QuorumView(
                reachable=True,
                leader=leader.value if leader is not None else None,
                holder=holder and until > self.clock(),
                serve_until=until if holder else 0.0,
                sync=sync.value if sync is not None else None,
                sync_revision=sync.mod_revision if sync is not None else 0,
                looked_at=self.clock(),
            )
