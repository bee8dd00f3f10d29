"""The etcd driver against a real three-member etcd 3.4 on 127.0.0.1 (issue 14, part B).

No namespaces: the three members (two nodes and a witness, as in quorum mode) differ by port.
Mutual TLS against a CA made for the test (esc.pki). Every member is stopped in the fixture's
teardown by the PID it was started with, even when a test fails.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from esc import pki
from esc.drivers.etcd import EtcdClient, EtcdMember, Member, Timing, Tls
from esc.drivers.quorum import QuorumKeeper, decode_leader, decode_record, encode_record
from esc.errors import QuorumError
from esc.model import SyncRecord
from esclab.lab_quorum import loopback_cluster

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("etcd") is None, reason="etcd-server not installed"),
]
LEADER = "/esc/leader"
SYNC = "/esc/sync"


def wait_for(
    what: str,
    check: Callable[[], bool],
    timeout: float = 60.0,
    explain: Callable[[], object] = lambda: "",
) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what} {explain()}")
        time.sleep(0.05)


@dataclass
class Quorum:
    root: Path
    members: list[Member]
    procs: dict[str, EtcdMember]
    tls: dict[str, Tls]

    def client(self, name: str, timeout: float = 1.0) -> EtcdClient:
        return EtcdClient([m.client_url for m in self.members], self.tls[name], timeout)

    def answers(self, name: str) -> bool:
        try:
            self.client(name).get("/probe")
        except QuorumError:
            return False
        return True


@pytest.fixture
def quorum() -> Iterator[Quorum]:
    root = Path(tempfile.mkdtemp(prefix="esc-etcd-"))
    members, procs, tls = loopback_cluster(root, Timing(50, 500), "test")
    q = Quorum(root, members, procs, tls)
    try:
        for p in procs.values():
            p.start()
        wait_for("the quorum answering", lambda: q.answers("esc-ha-0"))
        yield q
    finally:
        for p in procs.values():
            p.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_one_of_two_nodes_campaigning_gets_the_leader_key(quorum: Quorum) -> None:
    a, b = quorum.client("esc-ha-0"), quorum.client("esc-ha-1")
    lease_a, _ = a.grant(5)
    lease_b, _ = b.grant(5)
    assert a.swap(LEADER, "esc-ha-0", 0, lease_a) == (True, None)
    won, there = b.swap(LEADER, "esc-ha-1", 0, lease_b)
    assert not won and there is not None
    assert (there.value, there.lease) == ("esc-ha-0", lease_a)
    assert b.get(LEADER) == there


def test_the_leader_key_lives_as_long_as_its_lease_is_renewed(quorum: Quorum) -> None:
    c = quorum.client("esc-ha-0")
    lease, first = c.grant(2)
    assert first.ttl == 2 and first.expires <= time.monotonic() + 2
    assert c.swap(LEADER, "esc-ha-0", 0, lease)[0]
    end = time.monotonic() + 4  # twice the TTL, renewed every half TTL
    while time.monotonic() < end:
        r = c.keepalive(lease)
        assert r.ttl > 0 and r.expires > time.monotonic()
        assert c.get(LEADER) is not None
        time.sleep(0.5)
    # no more renewals: etcd removes the key with the lease, and a renewal says it is gone
    wait_for("the key gone with its lease", lambda: c.get(LEADER) is None, timeout=10)
    assert c.keepalive(lease).ttl == 0
    other = quorum.client("esc-ha-1")
    lease_b, _ = other.grant(2)
    assert other.swap(LEADER, "esc-ha-1", 0, lease_b)[0]


def test_the_sync_key_changes_only_from_the_revision_its_writer_read(quorum: Quorum) -> None:
    """The primary records who its synchronous standby is before it drops it (Patroni's
    /sync): a write from a stale view of the key loses."""
    c = quorum.client("esc-ha-0")
    assert c.swap(SYNC, "esc-ha-1", 0) == (True, None)
    seen = c.get(SYNC)
    assert seen is not None and seen.value == "esc-ha-1"
    assert c.swap(SYNC, "", seen.mod_revision)[0]  # drop, from what was read
    won, there = c.swap(SYNC, "esc-ha-0", seen.mod_revision)  # stale: refused
    assert not won and there is not None and there.value == ""
    assert not c.delete(SYNC, seen.mod_revision)
    assert c.delete(SYNC, there.mod_revision) and c.get(SYNC) is None


def test_a_client_from_another_ca_is_refused(quorum: Quorum, tmp_path: Path) -> None:
    other = pki.create_ca(tmp_path / "other")
    issued = pki.issue(other, tmp_path, "intruder", ["127.0.0.1"])
    intruder = EtcdClient(
        [m.client_url for m in quorum.members], Tls(other.cert, issued.cert, issued.key)
    )
    with pytest.raises(QuorumError, match="no member answered"):
        intruder.get(LEADER)
    # trusting the pair's CA but holding a certificate of another CA: refused by the members
    mixed = EtcdClient(
        [m.client_url for m in quorum.members],
        Tls(quorum.tls["esc-ha-0"].ca, issued.cert, issued.key),
    )
    with pytest.raises(QuorumError):
        mixed.get(LEADER)


def test_losing_the_witness_changes_nothing_losing_the_quorum_answers_nothing(
    quorum: Quorum,
) -> None:
    c = quorum.client("esc-ha-0", timeout=0.5)
    lease, _ = c.grant(5)
    assert c.swap(LEADER, "esc-ha-0", 0, lease)[0]
    quorum.procs["witness"].stop()
    assert c.keepalive(lease).ttl > 0
    kv = c.get(LEADER)
    assert kv is not None and kv.value == "esc-ha-0"
    quorum.procs["esc-ha-1"].stop()
    # one member of three: no read, no renewal (the key's write, which is what the keeper's
    # lease counts from), no write answers, and fast (every endpoint tried, each bounded by
    # the timeout), never a stale value
    calls: dict[str, Callable[[], object]] = {
        "get": lambda: c.get(LEADER),
        "refresh": lambda: c.refresh(LEADER, "esc-ha-0", lease),
        "grant": lambda: c.grant(5),
    }
    for name, call in calls.items():
        t0 = time.monotonic()
        with pytest.raises(QuorumError, match="no member answered"):
            answer = call()
            pytest.fail(f"{name} answered {answer!r} after {time.monotonic() - t0:.3f} s")
        assert time.monotonic() - t0 < 3 * 0.5 + 2.0  # not etcd's own 7 s request timeout

    # A bare keep-alive is answered by etcd's leader alone, from its memory, until it sees it
    # lost the quorum and steps down (an election timeout, 500 ms here): the keeper never
    # counts one without the key's write above. It stops within a few election timeouts.
    def keepalive_refused() -> bool:
        try:
            c.keepalive(lease)
        except QuorumError:
            return True
        return False

    wait_for("the lone member refusing keep-alives", keepalive_refused, timeout=30)
    quorum.procs["esc-ha-1"].start()
    quorum.procs["witness"].start()
    wait_for("the quorum back", lambda: quorum.answers("esc-ha-1"))


# --- the keeper: the lease and the keys on a thread of their own ------------------------------


class NeverTwo:
    """Polls both keepers' views on a thread: never both holders at one instant."""

    def __init__(self, a: QuorumKeeper, b: QuorumKeeper) -> None:
        self.keepers = (a, b)
        self.both: list[float] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            if all(k.view().holder for k in self.keepers):
                self.both.append(time.monotonic())
            time.sleep(0.01)

    def close(self) -> list[float]:
        self.stop.set()
        self.thread.join(5)
        return self.both


def keeper(q: Quorum, name: str, only_own: bool = False) -> QuorumKeeper:
    """``only_own``: its client reaches its own member only (its node's links cut)."""
    client = q.client(name, timeout=0.5)
    if only_own:
        own = next(m for m in q.members if m.name == name)
        client = EtcdClient([own.client_url], q.tls[name], 0.5)
    k = QuorumKeeper(client, name, ttl=3, margin=0.5)
    k.start()
    return k


def test_one_keeper_holds_the_key_and_a_planned_stop_hands_it_over(quorum: Quorum) -> None:
    a, b = keeper(quorum, "esc-ha-0"), keeper(quorum, "esc-ha-1")
    watch = NeverTwo(a, b)
    try:
        a.want_leader(True)
        wait_for("esc-ha-0 holding the key", lambda: a.view().holder, 60, a.view)
        b.want_leader(True)  # b campaigns at once (its wish wakes it), and must lose
        wait_for("esc-ha-1 seeing the holder", lambda: b.view().leader == "esc-ha-0")
        assert not b.view().holder
        a.stop()  # revokes: the key goes now, not after the TTL
        t0 = time.monotonic()
        wait_for("esc-ha-1 holding the key", lambda: b.view().holder, timeout=10)
        print(f"handed over in {time.monotonic() - t0:.2f} s")
        assert b.view().leader == "esc-ha-1"
    finally:
        a.stop()
        b.stop()
        assert watch.close() == []


def test_a_holder_that_dies_is_replaced_a_ttl_after_its_last_renewal(quorum: Quorum) -> None:
    """Its thread stops without resigning (as kill -9 would): the other keeper takes the key
    once the last revision it saw is a TTL old, not after etcd expires the lease; the views
    never overlap."""
    a, b = keeper(quorum, "esc-ha-0"), keeper(quorum, "esc-ha-1")
    watch = NeverTwo(a, b)
    try:
        a.want_leader(True)
        wait_for("esc-ha-0 holding the key", lambda: a.view().holder, 60, a.view)
        b.want_leader(True)
        wait_for("esc-ha-1 seeing the holder", lambda: b.view().leader == "esc-ha-0", 10, b.view)
        dead = quorum.client("esc-ha-0").get(LEADER)
        assert dead is not None
        a._stop.set()  # dies: no more renewals, no revoke
        a._wake.set()
        assert a._thread is not None
        a._thread.join(10)
        t0 = time.monotonic()
        wait_for("esc-ha-1 holding the key", lambda: b.view().holder, 15, b.view)
        print(f"taken over {time.monotonic() - t0:.2f} s after the holder died")
        now = quorum.client("esc-ha-1").get(LEADER)
        assert now is not None and decode_leader(now.value) == ("esc-ha-1", 3)
        assert now.lease != dead.lease
        # taken in place by the transaction on the stale revision (the same key's life), not
        # created again after etcd expired the lease and deleted it
        assert now.create_revision == dead.create_revision
    finally:
        a.stop()
        b.stop()
        assert watch.close() == []


def test_a_holder_cut_off_from_the_quorum_stops_before_its_lease_ends(quorum: Quorum) -> None:
    a, b = keeper(quorum, "esc-ha-0", only_own=True), keeper(quorum, "esc-ha-1")
    watch = NeverTwo(a, b)
    try:
        a.want_leader(True)
        wait_for("esc-ha-0 holding the key", lambda: a.view().holder, 60, a.view)
        b.want_leader(True)  # campaigns from now on, and loses while esc-ha-0 renews
        wait_for("esc-ha-1 seeing the holder", lambda: b.view().leader == "esc-ha-0", 10, b.view)
        assert 0 < a.view().serve_until - time.monotonic() <= 3 - 0.5
        # esc-ha-0 keeps only its own member: no quorum, no renewal
        quorum.procs["esc-ha-1"].stop()
        quorum.procs["witness"].stop()
        last = a.view().serve_until
        wait_for("esc-ha-0 giving up the key", lambda: not a.view().holder, timeout=10)
        # given up because serve_until passed with no renewal answered (the instant itself is
        # checked on a clock of the test's in test_quorum_keeper.py, not here)
        assert not a.view().reachable and a.view().serve_until == last
        # the quorum back without esc-ha-0 (its member down, so it reaches nothing): esc-ha-1
        # takes over once it has seen the key unchanged for a whole TTL
        quorum.procs["esc-ha-0"].stop()
        quorum.procs["esc-ha-1"].start()
        quorum.procs["witness"].start()
        wait_for("esc-ha-1 holding the key", lambda: b.view().holder, 30, b.view)
        assert not a.view().holder
    finally:
        a.stop()
        b.stop()
        assert watch.close() == []


def test_only_the_holder_records_the_synchronous_standby(quorum: Quorum) -> None:
    a, b = keeper(quorum, "esc-ha-0"), keeper(quorum, "esc-ha-1")
    in_sync, alone = SyncRecord("esc-ha-0", "esc-ha-1"), SyncRecord("esc-ha-0")
    try:
        a.want_leader(True)
        wait_for("esc-ha-0 holding the key", lambda: a.view().holder, 60, a.view)
        a.record_sync(in_sync, 0)
        wait_for("esc-ha-1 recorded", lambda: b.view().sync == in_sync)
        rev = b.view().sync_revision
        b.record_sync(SyncRecord("esc-ha-1"), rev)  # not the holder: not carried out
        a.record_sync(alone, rev + 100)  # a stale revision: refused by etcd
        for k in (a, b, a, b):  # two whole rounds of each keeper after the requests
            t = time.monotonic()
            wait_for("a round of the keeper", lambda k=k, t=t: k.view().looked_at > t, 10)
        assert (a.view().sync, a.view().sync_revision) == (in_sync, rev)
        a.record_sync(alone, rev)  # dropped, from what was read
        wait_for("nobody recorded", lambda: b.view().sync == alone)
        # etcd itself refuses a swap by a lease that no longer holds the leader key, even
        # from the record's current revision (the compare on the key's lease, in one txn).
        c = quorum.client("esc-ha-0")
        held = c.get(LEADER)
        assert held is not None and held.lease
        rev = b.view().sync_revision
        a.want_leader(False)  # resigns: the lease is revoked, esc-ha-1 takes the key
        b.want_leader(True)
        wait_for("esc-ha-1 holding the key", lambda: b.view().holder, 30, b.view)
        ok, now = c.swap(SYNC, encode_record(in_sync), rev, while_held=(LEADER, held.lease))
        assert not ok and now is not None and decode_record(now.value) == alone
        ok, _ = c.swap(SYNC, encode_record(in_sync), rev, while_held=(LEADER, b._lease))
        assert ok  # the same swap, by the holder's lease
    finally:
        a.stop()
        b.stop()
