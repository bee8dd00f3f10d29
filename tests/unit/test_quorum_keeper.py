"""The quorum keeper's rules on a clock it does not own: a holder stops being one at
serve_until even when its thread is stuck, and at once when it resigns."""

from __future__ import annotations

import json
import math
from typing import Any, cast

import pytest

from esc.drivers.etcd import EtcdClient, Kv, Renewal
from esc.drivers.quorum import (
    RETRY_S,
    QuorumKeeper,
    decode_record,
    encode_leader,
    encode_record,
)
from esc.errors import QuorumError
from esc.model import SyncRecord

PEER_KEY = encode_leader("esc-ha-1", 3)  # the peer's key, as its keeper writes it


class Clock:
    t = 100.0

    def __call__(self) -> float:
        return self.t


class OneMember:
    """Just enough of etcd for one client: leases never expire by themselves here."""

    def __init__(self, clock: Clock) -> None:
        self.clock, self.keys, self.leases, self.down = clock, {}, set(), False
        self.revision = 0
        self.granted = 0
        self.swaps: list[tuple[str, int]] = []  # (key, the revision compared)

    def _up(self) -> None:
        if self.down:
            raise QuorumError("no member answered")

    def grant(self, ttl: int) -> tuple[int, Renewal]:
        self._up()
        self.granted += 1
        lease = 1000 + self.granted  # never reused, as etcd's
        self.leases.add(lease)
        return lease, Renewal(ttl, self.clock())

    def keepalive(self, lease: int) -> Renewal:
        self._up()
        return Renewal(3 if lease in self.leases else 0, self.clock())

    def revoke(self, lease: int) -> None:
        self._up()
        self.leases.discard(lease)
        self.keys = {k: v for k, v in self.keys.items() if v.lease != lease}

    def get(self, key: str) -> Kv | None:
        self._up()
        return self.keys.get(key)

    def swap(
        self,
        key: str,
        value: str,
        mod: int,
        lease: int = 0,
        while_held: tuple[str, int] | None = None,
    ) -> tuple[bool, Kv | None]:
        self._up()
        self.swaps.append((key, mod))
        now = self.keys.get(key)
        if (now.mod_revision if now else 0) != mod:
            return False, now
        if while_held is not None:
            held = self.keys.get(while_held[0])
            if held is None or held.lease != while_held[1]:
                return False, now
        self.revision += 1
        self.keys[key] = Kv(key, value, self.revision, self.revision, lease)
        return True, None

    def refresh(self, key: str, value: str, lease: int) -> bool:
        self._up()
        now = self.keys.get(key)
        if now is None or now.lease != lease:
            return False
        self.revision += 1
        self.keys[key] = Kv(key, value, now.create_revision, self.revision, lease)
        return True


def keeper() -> tuple[QuorumKeeper, OneMember, Clock]:
    clock = Clock()
    etcd = OneMember(clock)
    k = QuorumKeeper(cast(EtcdClient, etcd), "esc-ha-0", ttl=3, margin=0.5, clock=clock)
    return k, etcd, clock


def test_a_holder_whose_renewals_fail_stops_holding_at_serve_until() -> None:
    k, etcd, clock = keeper()
    k.want_leader(True)
    k.step()
    v = k.view()
    assert v.holder and v.serve_until == 100.0 + 3 - 0.5
    etcd.down = True
    clock.t = 102.4
    with pytest.raises(QuorumError):  # the thread records it and retries
        k.step()
    assert k.view().holder  # 0.1 s left
    clock.t = 102.5
    assert not k.view().holder  # its lease may end in etcd from now on: not a holder


def test_resigning_stops_holding_before_the_lease_is_revoked() -> None:
    k, etcd, _ = keeper()
    k.want_leader(True)
    k.step()
    assert k.view().holder
    k.want_leader(False)
    assert not k.view().holder and etcd.leases  # not yet revoked, already not a holder
    k.step()
    assert not etcd.leases and etcd.get("/esc/leader") is None


def test_the_record_is_changed_only_by_the_holder_from_the_revision_read() -> None:
    k, etcd, _ = keeper()
    to_1 = SyncRecord("esc-ha-0", "esc-ha-1")
    k.record_sync(to_1, 0)
    k.step()  # not a holder: dropped
    assert k.view().sync is None
    k.want_leader(True)
    k.step()
    k.record_sync(to_1, 0)
    k.step()
    v = k.view()
    assert (v.sync, v.sync_revision) == (to_1, etcd.keys["/esc/sync"].mod_revision)
    assert json.loads(etcd.keys["/esc/sync"].value) == {"primary": "esc-ha-0", "sync": "esc-ha-1"}
    k.record_sync(SyncRecord("esc-ha-0"), 1)  # stale
    k.step()
    assert k.view().sync == to_1


def test_a_holder_whose_key_was_taken_over_cannot_change_the_record() -> None:
    """The swap compares the leader key's lease in the same transaction: a keeper that still
    thinks it holds the key (its lease ended in etcd, another node took the key) changes
    nothing, even from the record's current revision."""
    k, etcd, _ = keeper()
    k.want_leader(True)
    k.step()
    k.record_sync(SyncRecord("esc-ha-0", "esc-ha-1"), 0)
    k.step()
    rev = k.view().sync_revision
    etcd.leases.clear()  # the lease ran out in etcd; esc-ha-1 took the key
    etcd.keys["/esc/leader"] = Kv("/esc/leader", PEER_KEY, 9, 9, 77)
    k.record_sync(SyncRecord("esc-ha-0"), rev)
    k.step()
    assert decode_record(etcd.keys["/esc/sync"].value) == SyncRecord("esc-ha-0", "esc-ha-1")
    assert not k.view().holder and k.view().leader == "esc-ha-1"


def test_a_key_that_is_not_a_record_names_nobody() -> None:
    for bad in ("", "esc-ha-1", "[1]", '{"primary": 3}', '{"sync": "esc-ha-1"}'):
        assert decode_record(bad) == SyncRecord("", ""), bad
        assert not decode_record(bad).names("esc-ha-1")
    assert decode_record(encode_record(SyncRecord("a", "b"))) == SyncRecord("a", "b")


def test_a_standby_campaigns_only_once_the_key_is_free() -> None:
    """No lease is granted while another node holds the key (a campaign round costs a read)."""
    k, etcd, _ = keeper()
    etcd.keys["/esc/leader"] = Kv("/esc/leader", PEER_KEY, 1, 1, 42)
    k.want_leader(True)
    k.step()
    assert not etcd.leases and not k.view().holder and k.view().leader == "esc-ha-1"
    del etcd.keys["/esc/leader"]
    k.step()
    assert k.view().holder and k.view().leader == "esc-ha-0"


def test_a_key_whose_renewals_stop_is_taken_a_whole_ttl_after_its_last_revision_was_seen() -> None:
    """The standby counts the lease from when it first saw the holder's last renewal (the
    renewal was sent before that), not from etcd's expiry; a renewal seen starts it again."""
    k, etcd, clock = keeper()
    etcd.keys["/esc/leader"] = Kv("/esc/leader", PEER_KEY, 1, 1, 42)
    etcd.revision = 1
    k.want_leader(True)
    k.step()  # first sees revision 1 at 100.0
    clock.t = 102.0
    etcd.revision = 5
    etcd.keys["/esc/leader"] = Kv("/esc/leader", PEER_KEY, 1, 5, 42)  # esc-ha-1 renewed
    k.step()  # revision 5 first seen at 102.0
    for t in (104.0, 104.99):
        clock.t = t
        k.step()
        assert not k.view().holder and not etcd.leases, t
        assert 0 < k._pause() <= 0.2
    clock.t = 105.0
    assert k._pause() == 0
    k.step()
    v = k.view()
    assert v.holder and v.leader == "esc-ha-0" and v.serve_until == 105.0 + 3 - 0.5


def test_a_takeover_fails_when_the_holder_renewed_unseen() -> None:
    """The takeover is a transaction on the revision this keeper saw: a renewal etcd applied
    that this keeper has not seen (its reads lagging) makes it fail, and nothing is held."""
    k, etcd, clock = keeper()
    etcd.keys["/esc/leader"] = Kv("/esc/leader", PEER_KEY, 1, 1, 42)
    etcd.revision = 1
    k.want_leader(True)
    k.step()
    clock.t = 103.0
    real_get = etcd.get
    etcd.get = lambda key: (  # type: ignore[method-assign]
        Kv("/esc/leader", PEER_KEY, 1, 1, 42) if key == "/esc/leader" else real_get(key)
    )  # a read that still shows revision 1
    etcd.revision = 7
    etcd.keys["/esc/leader"] = Kv("/esc/leader", PEER_KEY, 1, 7, 42)
    k.step()
    assert not k.view().holder and etcd.keys["/esc/leader"].value == PEER_KEY
    assert ("/esc/leader", 1) in etcd.swaps  # tried, on the revision it saw: refused
    assert not etcd.leases  # the lease granted for it was revoked


def test_a_holder_whose_key_was_taken_stops_holding_at_its_next_renewal() -> None:
    k, etcd, clock = keeper()
    k.want_leader(True)
    k.step()
    assert k.view().holder
    etcd.keys["/esc/leader"] = Kv("/esc/leader", PEER_KEY, 1, 9, 77)
    clock.t = 100.75
    k.step()
    v = k.view()
    assert not v.holder and v.leader == "esc-ha-1" and not etcd.leases


def test_a_keeper_needs_a_lease_longer_than_twice_its_margin() -> None:
    for ttl, margin in ((1, 0.2), (3, 1.5), (3, 0.0)):
        with pytest.raises(ValueError, match="ttl >= 2"):
            QuorumKeeper(cast(Any, None), "n", ttl=ttl, margin=margin)


def test_a_lease_that_cannot_be_revoked_is_forgotten_and_the_keeper_campaigns_again() -> None:
    """(Seen in the lab: a keeper that resigned while its lease had already expired in etcd
    retried the revoke, which etcd refuses ("lease not found"), every round, and never looked
    at the keys again.)"""
    k, etcd, _ = keeper()
    k.want_leader(True)
    k.step()
    first = next(iter(etcd.leases))

    def refuse(lease: int) -> None:
        raise QuorumError("etcd lease/revoke: no member answered: lease not found")

    etcd.revoke = refuse  # type: ignore[method-assign]
    k.want_leader(False)
    k.step()
    assert k.view().reachable and not k.view().holder
    etcd.leases.clear()  # it ran out in etcd; the key went with it
    etcd.keys.pop("/esc/leader")
    k.want_leader(True)
    k.step()
    assert k.view().holder and next(iter(etcd.leases)) != first


def test_a_renewal_answered_with_a_negative_ttl_ends_the_lease() -> None:
    k, etcd, _ = keeper()
    k.want_leader(True)
    k.step()
    etcd.keepalive = lambda lease: Renewal(-1, 100.0)  # type: ignore[method-assign]
    etcd.keys.pop("/esc/leader")
    k.step()  # gone: forgotten, and the free key taken again with a new lease
    assert k.view().holder and len(etcd.leases) == 2


def test_the_wait_is_the_longer_of_the_two_ttls_and_an_unmarked_key_waits_for_etcd() -> None:
    """Hosts configured apart: a holder renewing within its 6 s lease is not taken after this
    keeper's 3 s. A key that does not say its TTL (a holder that renews by keep-alive only,
    its revision never changing) is taken only once etcd has deleted it."""
    k, etcd, clock = keeper()
    etcd.keys["/esc/leader"] = Kv("/esc/leader", encode_leader("esc-ha-1", 6), 1, 1, 42)
    k.want_leader(True)
    k.step()
    assert k.observe().takeover_in == 6.0
    clock.t = 105.9
    k.step()
    assert not k.view().holder
    clock.t = 106.0
    k.step()
    assert k.view().holder
    for value in ("esc-ha-1", '{"node": "esc-ha-1"}', '{"node": "esc-ha-1", "ttl": true}'):
        k, etcd, clock = keeper()
        etcd.keys["/esc/leader"] = Kv("/esc/leader", value, 1, 1, 42)
        k.want_leader(True)
        k.step()
        clock.t = 1000.0
        k.step()
        assert not k.view().holder and k.view().leader == "esc-ha-1", value
        assert k.observe().takeover_in == math.inf and k._pause() == k.poll_s
        del etcd.keys["/esc/leader"]
        k.step()
        assert k.view().holder


def test_a_keeper_that_keeps_failing_never_spins() -> None:
    """(A stale key seen, then every call refused at once: the wait after a failed round is
    never 0.)"""
    k, etcd, clock = keeper()
    etcd.keys["/esc/leader"] = Kv("/esc/leader", PEER_KEY, 1, 1, 42)
    k.want_leader(True)
    k.step()
    clock.t = 200.0
    assert k._pause() == 0  # stale now: the next round takes it at once
    etcd.down = True
    waits: list[float] = []

    class Wake:
        def wait(self, timeout: float) -> bool:
            waits.append(timeout)
            if len(waits) >= 3:
                k._stop.set()
            return False

        def clear(self) -> None: ...

    k._wake = Wake()  # type: ignore[assignment]
    k._run()
    assert waits and min(waits) >= RETRY_S


def test_serve_until_counts_from_the_keepalive_sent_before_the_keys_write() -> None:
    k, etcd, clock = keeper()
    k.want_leader(True)
    k.step()
    real = etcd.refresh

    def slow_refresh(key: str, value: str, lease: int) -> bool:
        clock.t += 0.3  # the key's write answered 0.3 s after the keep-alive was sent
        return real(key, value, lease)

    etcd.refresh = slow_refresh  # type: ignore[method-assign]
    clock.t = 101.0
    k.step()
    assert k.view().serve_until == 101.0 + 3 - 0.5
