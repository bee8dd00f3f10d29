"""The PostgreSQL driver against two real PostgreSQL 15 clusters on 127.0.0.1.

No network namespaces: the two instances differ by port and socket directory, as the lab's two
nodes differ by namespace. Every instance is stopped in the fixture's teardown, through pg_ctl on
its own data directory (never by process name), even when a test fails.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest

from esc import pki
from esc.drivers.postgres import PostgresDriver, parse_pid_file
from esc.errors import DbError
from esc.model import DbRole

BINDIR = Path("/usr/lib/postgresql/15/bin")
# Characters that break naive quoting in a passfile (':' '\\') and in SQL/conf ("'").
PASSWORD = "s3cret:pw'\\x"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not (BINDIR / "postgres").exists(), reason="PostgreSQL 15 not installed"),
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (runuser -u postgres)"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(what: str, check: Callable[[], bool], timeout: float = 30.0) -> None:
    """Poll ``check`` until true; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def connect(drv: PostgresDriver, dbname: str = "esc", **options: str) -> psycopg.Connection[Any]:
    opts = " ".join(f"-c {k}={v}" for k, v in options.items())
    return psycopg.connect(
        host=str(drv.socket_dir),
        port=drv.port,
        user="postgres",
        dbname=dbname,
        autocommit=True,
        options=opts,
    )


def query(drv: PostgresDriver, text: str, dbname: str = "esc", **options: str) -> list[Any]:
    with connect(drv, dbname, **options) as conn:
        cur = conn.execute(text)
        return cur.fetchall() if cur.description else []


def rows_of(drv: PostgresDriver, table: str) -> set[str]:
    try:
        return {r[0] for r in query(drv, f"SELECT v FROM {table}")}
    except psycopg.Error:
        return set()


def make_pki(root: Path, name: str) -> Path:
    """The pair CA (one per test root) and ``name``'s certificate for 127.0.0.1, installed as
    ``<etc>/pki`` is: replication runs over TLS with ``verify-full`` as in the product."""
    ca = pki.create_ca(root / "ca")
    issued = pki.issue(ca, root / "issued", name, ["127.0.0.1"])
    pki.install_files(ca.cert, issued.cert, issued.key, root / name / "etc" / "pki")
    return root / name / "etc" / "pki"


def make_driver(root: Path, name: str, peer: str, port: int, peer_port: int) -> PostgresDriver:
    node = root / name
    return PostgresDriver(
        pki=make_pki(root, name),
        node_name=name,
        peer_name=peer,
        pgdata=node / "data" / "pgdata",
        data_root=node / "data",
        socket_dir=node / "run",
        port=port,
        listen="127.0.0.1",
        peer_host="127.0.0.1",
        peer_port=peer_port,
        repl_password=PASSWORD,
        bindir=BINDIR,
        log_file=node / "log" / "postgres.log",
    )


def force_stop(drv: PostgresDriver) -> None:
    """Teardown: pg_ctl immediate stop; if that fails, SIGKILL the postmaster of *this* data
    directory (its PID from postmaster.pid, checked to be a postgres process)."""
    try:
        drv.stop_immediate()
        return
    except Exception:
        pass
    with contextlib.suppress(Exception):
        parsed = parse_pid_file((drv.pgdata / "postmaster.pid").read_text())
        if parsed and Path(f"/proc/{parsed[0]}/comm").read_text().strip() == "postgres":
            os.kill(parsed[0], signal.SIGKILL)


@dataclass
class Pair:
    primary: PostgresDriver  # ha-0 at the start
    standby: PostgresDriver  # ha-1 at the start
    progress: list[tuple[str, int, int]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


@pytest.fixture
def root() -> Iterator[Path]:
    # Not pytest's tmp_path: it lives under a 0700 root-owned directory the postgres user
    # cannot traverse.
    path = Path(tempfile.mkdtemp(prefix="esc-pgtest-", dir="/tmp"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def drivers(root: Path) -> Iterator[tuple[PostgresDriver, PostgresDriver]]:
    p0, p1 = free_port(), free_port()
    a = make_driver(root, "ha-0", "ha-1", p0, p1)
    b = make_driver(root, "ha-1", "ha-0", p1, p0)
    try:
        yield a, b
    finally:
        for drv in (a, b):
            force_stop(drv)


@pytest.fixture
def pair(drivers: tuple[PostgresDriver, PostgresDriver]) -> Pair:
    a, b = drivers
    pair = Pair(a, b)
    t0 = time.monotonic()
    a.init_primary()
    pair.timings["init_primary"] = time.monotonic() - t0
    t0 = time.monotonic()
    result = b.follow("127.0.0.1", lambda op, done, total: pair.progress.append((op, done, total)))
    pair.timings["clone"] = time.monotonic() - t0
    assert result.method == "reclone"
    assert result.preserved is None
    wait_for("ha-1 as sync standby", lambda: a.status().sync_standby == "ha-1")
    return pair


def test_status_absent_stopped_primary_and_idempotent_init(
    drivers: tuple[PostgresDriver, PostgresDriver],
) -> None:
    a, _ = drivers
    assert a.status().role is DbRole.ABSENT
    a.init_primary()
    a.init_primary()  # idempotent: already initialised and running
    assert a.status().role is DbRole.PRIMARY
    a.stop()
    a.stop()  # idempotent
    assert a.status().role is DbRole.STOPPED
    a.start()
    a.start()
    assert a.status().role is DbRole.PRIMARY


def test_clone_replicates_synchronously(pair: Pair) -> None:
    a, b = pair.primary, pair.standby
    assert pair.progress, "pg_basebackup progress was reported"
    assert pair.progress[-1][0] == "cloning"
    assert pair.progress[-1][1] == pair.progress[-1][2] > 0

    query(a, "CREATE TABLE t (v text)")
    query(a, "INSERT INTO t VALUES ('committed')")
    wait_for("row on the standby", lambda: "committed" in rows_of(b, "t"))

    sa, sb = a.status(), b.status()
    assert sa.role is DbRole.PRIMARY and sb.role is DbRole.STANDBY
    assert sa.timeline == sb.timeline == 1
    assert sa.lsn > 0 and sa.receive_lsn == 0 and not sa.streaming
    assert sa.sync_standby == "ha-1"
    assert sa.sync_names == 'FIRST 1 ("ha-0", "ha-1")'
    assert sb.streaming and sb.sync_standby is None
    assert 0 < sb.lsn <= sb.receive_lsn <= a.status().lsn
    assert sb.replay_lag_s >= 0
    sync = query(a, "SELECT application_name, sync_state FROM pg_stat_replication", "postgres")
    assert sync == [("ha-1", "sync")]
    # the standby streams through its own slot, named after it
    slots = query(a, "SELECT slot_name, active FROM pg_replication_slots", "postgres")
    assert slots == [("ha_1", True)]

    assert b.follow("127.0.0.1").method == "none"

    print(f"timings: {pair.timings}")  # status() latency: bench/status.py


def test_replication_runs_over_tls_and_refuses_what_lacks_the_pairs_certificate(
    pair: Pair, root: Path
) -> None:
    a, b = pair.primary, pair.standby
    tls = query(
        a,
        "SELECT s.ssl, s.version, s.client_dn FROM pg_stat_ssl s "
        "JOIN pg_stat_replication r USING (pid)",
        "postgres",
    )
    assert tls == [(True, "TLSv1.3", "/CN=ha-1")]
    # the password alone, without TLS or without a certificate, is refused by pg_hba
    repl = {"host": "127.0.0.1", "port": a.port, "user": "replicator", "password": PASSWORD}
    for ssl in ({"sslmode": "disable"}, {"sslmode": "require"}):
        with pytest.raises(psycopg.OperationalError, match=r"pg_hba|certificate"):
            psycopg.connect(dbname="postgres", connect_timeout=5, **repl, **ssl).close()
    # another CA's certificate: refused too, and the server is checked against the pair CA
    other = pki.create_ca(root / "other-ca")
    stranger = pki.issue(other, root / "other", "ha-1", ["127.0.0.1"])
    with pytest.raises(psycopg.OperationalError, match="unknown ca"):
        psycopg.connect(
            dbname="postgres", connect_timeout=5, sslmode="verify-full",
            sslrootcert=str(root / "ca" / "ca.crt"), sslcert=str(stranger.cert),
            sslkey=str(stranger.key), **repl,
        ).close()  # fmt: skip
    with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
        psycopg.connect(
            dbname="postgres", connect_timeout=5, sslmode="verify-full",
            sslrootcert=str(other.cert), **repl,
        ).close()  # fmt: skip
    # and the pair's own certificate with the password: pg_rewind's database, nothing else
    d = b.node.tls_dir
    assert d is not None
    own = {"sslmode": "verify-full", "sslrootcert": str(d / "ca.crt"),
           "sslcert": str(d / "host.crt"), "sslkey": str(d / "host.key")}  # fmt: skip
    psycopg.connect(dbname="postgres", connect_timeout=5, **repl, **own).close()
    with pytest.raises(psycopg.OperationalError, match="pg_hba"):
        psycopg.connect(dbname="esc", connect_timeout=5, **repl, **own).close()


def test_status_survives_a_restart(pair: Pair) -> None:
    """The kept connection breaks on restart; status reconnects instead of failing."""
    a = pair.primary
    assert a.status().role is DbRole.PRIMARY
    a.stop()
    assert a.status().role is DbRole.STOPPED
    a.start()
    assert a.status().role is DbRole.PRIMARY


def test_strict_sync_commit_waits_for_the_standby(pair: Pair) -> None:
    a, b = pair.primary, pair.standby
    query(a, "CREATE TABLE t (v text)")
    b.stop()
    assert b.status().role is DbRole.STOPPED
    done = threading.Event()
    errors: list[BaseException] = []

    def commit() -> None:
        try:
            query(a, "INSERT INTO t VALUES ('waited')")
            done.set()
        except BaseException as exc:
            errors.append(exc)

    before = a.status()
    assert before.xid_xmin <= before.xid_xmax and before.xid_xmax > 0
    thread = threading.Thread(target=commit, daemon=True)
    thread.start()
    assert not done.wait(1.5), "commit returned without a synchronous standby"
    # The waiting commit still runs: the oldest running id bounds it from below, so the
    # exposure of a primary left alone (core.decide.exposure_after) counts it.
    waiting = a.status()
    assert waiting.xid_xmin == before.xid_xmax == waiting.xid_xmax, (before, waiting)
    b.start()
    assert done.wait(30), f"commit still blocked after the standby returned: {errors}"
    assert a.status().xid_xmax == before.xid_xmax + 1  # one write transaction since
    assert b.status().xid_xmax == 0  # a standby has none
    thread.join(5)
    assert not errors
    wait_for("row on the standby", lambda: "waited" in rows_of(b, "t"))


def test_follow_reconfigure_after_clean_stop(pair: Pair) -> None:
    b = pair.standby
    b.stop()
    assert b.follow("127.0.0.1").method == "reconfigure"
    wait_for("streaming again", lambda: b.status().streaming)


def test_promote_diverge_rewind_preserves(pair: Pair) -> None:
    old, new = pair.primary, pair.standby
    query(old, "CREATE TABLE t (v text)")
    query(old, "CREATE TABLE diverge_me (v text)")
    query(old, "INSERT INTO t VALUES ('before')")
    wait_for("'before' on the standby", lambda: "before" in rows_of(new, "t"))

    t0 = time.monotonic()
    new.promote()
    promote_s = time.monotonic() - t0
    st = new.status()
    assert st.role is DbRole.PRIMARY and st.timeline == 2
    new.promote()  # idempotent
    assert ("ha_0",) in query(new, "SELECT slot_name FROM pg_replication_slots", "postgres")

    # the new primary names ha-0 synchronous, which is gone: go asynchronous (DropSync)
    new.set_synchronous(None)
    assert new.status().sync_names == ""
    query(new, "INSERT INTO t VALUES ('after')")

    # the isolated old primary keeps writing: the split brain to preserve
    old.set_synchronous(None)
    query(old, "INSERT INTO diverge_me VALUES ('lost-on-old-primary')")
    # segments PostgreSQL preallocated ahead (all zeros) must not be where pg_waldump looks
    # for the segment size: it then read nothing and kept nothing (found by test_heal.py)
    wal = old.pgdata / "pg_wal"
    last = max(p.name for p in wal.iterdir() if len(p.name) == 24 and p.name.startswith("0"))
    for k in (1, 2, 3):
        ahead = f"{last[:16]}{int(last[16:], 16) + k:08X}"
        (wal / ahead).write_bytes(b"\0" * 16 * 1024 * 1024)
    # what is kept when pg_waldump reads nothing: the segments themselves, the row's text in
    kept = old._follower.forensics.keep_segments(0x1000000, 1, 16 * 1024 * 1024)
    assert kept.parent == old.diverged_dir and kept.name.startswith("wal-")
    assert any(b"lost-on-old-primary" in seg.read_bytes() for seg in kept.iterdir())
    assert not any(seg.name < "000000010000000000000001" for seg in kept.iterdir())

    t0 = time.monotonic()
    result = old.follow("127.0.0.1")
    rewind_s = time.monotonic() - t0
    assert result.method == "rewind"
    assert result.diverged_from_lsn is not None and result.preserved is not None
    text = result.preserved.read_text()
    assert result.preserved.parent == old.diverged_dir
    assert "diverge_me" in text
    assert "lost-on-old-primary" in text  # the row itself, decoded before the rewind
    assert "rmgr: Heap" in text and "INSERT" in text
    assert PASSWORD not in text

    so = old.status()
    assert so.role is DbRole.STANDBY
    wait_for("old primary streaming from the new one", lambda: old.status().streaming)
    wait_for("'after' on the old primary", lambda: "after" in rows_of(old, "t"))
    assert "lost-on-old-primary" not in rows_of(old, "diverge_me")
    print(text[:3000])
    assert old.status().timeline == 2

    auto = (old.pgdata / "postgresql.auto.conf").read_text()
    assert auto.count("primary_conninfo") == 1 and f"port={new.port}" in auto
    assert "primary_slot_name = 'ha_0'" in auto
    assert PASSWORD not in auto
    # the former primary's slot for ha-1 would pin WAL on a standby: dropped
    assert query(old, "SELECT slot_name FROM pg_replication_slots", "postgres") == []

    new.set_synchronous("ha-0")
    wait_for("ha-0 as sync standby", lambda: new.status().sync_standby == "ha-0")
    query(new, "INSERT INTO t VALUES ('sync-again')")
    wait_for("'sync-again' on ha-0", lambda: "sync-again" in rows_of(old, "t"))
    assert old.follow("127.0.0.1").method == "none"
    print(f"promote {promote_s * 1e3:.0f} ms, follow(rewind) {rewind_s:.2f} s, {pair.timings}")


def test_a_promotion_above_the_peers_timeline_opens_a_new_id_and_the_loser_rewinds(
    pair: Pair,
) -> None:
    """The standby never streamed its peer's newer timeline 2 (it does not know the id):
    promoted above it, it opens timeline 3, and the old primary, which diverged on timeline
    1, is rewound onto it (PostgreSQL's history parser skips the reserved file's comment)."""
    old, new = pair.primary, pair.standby
    query(old, "CREATE TABLE t (v text)")
    query(old, "INSERT INTO t VALUES ('before')")
    wait_for("'before' on the standby", lambda: "before" in rows_of(new, "t"))
    new.promote(above_timeline=2)
    assert new.status().timeline == 3
    assert (new.pgdata / "pg_wal" / "00000002.history").read_text().startswith("# esc-ha")
    new.set_synchronous(None)
    query(new, "INSERT INTO t VALUES ('after')")
    old.set_synchronous(None)
    query(old, "INSERT INTO t VALUES ('diverged')")
    result = old.follow("127.0.0.1")
    assert result.method == "rewind" and result.preserved is not None
    wait_for("old primary streaming on timeline 3", lambda: old.status().streaming)
    wait_for("'after' on the old primary", lambda: "after" in rows_of(old, "t"))
    assert old.status().timeline == 3 and "diverged" not in rows_of(old, "t")


def test_follow_after_crash_and_promote(pair: Pair) -> None:
    """The failover of PROBE-NOTES: crash the primary, promote, rejoin (rewind or not)."""
    old, new = pair.primary, pair.standby
    query(old, "CREATE TABLE t (v text)")
    query(old, "INSERT INTO t VALUES ('acked')")
    old.stop_immediate()
    new.promote()
    new.set_synchronous(None)
    query(new, "INSERT INTO t VALUES ('after')")
    result = old.follow("127.0.0.1")
    print(f"crash rejoin: {result}")
    assert result.method in ("rewind", "reconfigure")
    assert result.preserved is None  # every commit was acknowledged by ha-1: nothing to keep
    wait_for("'after' on the old primary", lambda: "after" in rows_of(old, "t"))
    assert "acked" in rows_of(new, "t")


def test_reclone_when_data_is_gone(pair: Pair) -> None:
    a, b = pair.primary, pair.standby
    query(a, "CREATE TABLE t (v text)")
    query(a, "INSERT INTO t SELECT g::text FROM generate_series(1, 50000) g")
    b.stop_immediate()
    shutil.rmtree(b.pgdata)
    assert b.status().role is DbRole.ABSENT
    seen: list[tuple[str, int, int]] = []
    t0 = time.monotonic()
    result = b.follow("127.0.0.1", lambda op, d, t: seen.append((op, d, t)))
    print(f"reclone {time.monotonic() - t0:.2f} s")
    assert result.method == "reclone" and result.preserved is None
    assert seen
    wait_for("rows on the re-cloned standby", lambda: len(rows_of(b, "t")) == 50000)
    wait_for("sync again", lambda: a.status().sync_standby == "ha-1")


def test_follow_an_unreachable_primary_touches_nothing(pair: Pair) -> None:
    """The source is proven reachable before anything local is stopped or rewritten."""
    b = pair.standby
    auto = (b.pgdata / "postgresql.auto.conf").read_text()
    with pytest.raises(DbError):
        b.follow("127.0.0.2")  # loopback, but PostgreSQL listens on 127.0.0.1 only
    assert b.status().role is DbRole.STANDBY and b.status().streaming
    assert (b.pgdata / "postgresql.auto.conf").read_text() == auto
