"""Replicated database in the lab: no acknowledged write lost on failover, rejoin by rewind,
diverged writes preserved, strict vs available with the standby gone, outdated standby kept
from promotion. Outcomes only; timings belong to bench/."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from labutil import NODES, escadm, eventually, psql, states, wait_pair

from esc.config.schema import load_config, save_config
from esclab import faults
from esclab.lab import Lab

pytestmark = pytest.mark.integration
WRITER = Path(__file__).with_name("writer.py")


class Writer:
    """Inserts rows inside ``host`` and records which inserts were acknowledged."""

    def __init__(self, lab: Lab, host: str, table: str, start: int = 1, count: int = 100_000):
        sock = str(lab.node_paths(host).pg_socket_dir)
        self.acked: list[int] = []
        self.proc = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                host,
                sys.executable,
                str(WRITER),
                sock,
                table,
                str(start),
                str(count),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("ready"):
                self.ready.set()
            elif line.startswith("ack "):
                self.acked.append(int(line.split()[1]))

    def stop(self) -> list[int]:
        self.proc.kill()
        self.proc.wait()
        self.thread.join(10)
        return self.acked


def _ids(lab: Lab, host: str, table: str) -> set[int]:
    out = psql(lab, host, f"select id from {table}").stdout
    return {int(x) for x in out.split()}


def test_failover_under_writes_loses_no_acknowledged_insert(
    healthy: tuple[str, str], pair: Lab
) -> None:
    master, backup = healthy
    w = Writer(pair, master, "t_stream")
    assert w.ready.wait(30)
    eventually(lambda: len(w.acked) >= 200, 60, what="200 acknowledged inserts")
    faults.signal_component(pair, master, "all", faults.signal.SIGKILL)  # writer dies with it
    acked = w.stop()
    eventually(lambda: states(pair)[backup] == "MASTER", 60, what=f"{backup} MASTER")
    present = _ids(pair, backup, "t_stream")
    assert set(acked) <= present, f"lost {sorted(set(acked) - present)[:10]}"
    # The old primary rejoins as a synchronous standby by rewind, with every row.
    faults.reboot(pair, master)
    assert wait_pair(pair) == (backup, master)
    eventually(
        lambda: (
            json.loads(escadm(backup, pair, "status", "--json").stdout)["db"]["sync_standby"]
            == master
        ),
        60,
        what="old primary back in sync",
    )
    psql(pair, backup, "insert into t_stream values (-1)")
    assert -1 in _ids(pair, master, "t_stream")
    assert set(acked) <= _ids(pair, master, "t_stream")


def test_split_brain_heals_by_data_and_preserves_diverged_writes(
    healthy: tuple[str, str], pair: Lab
) -> None:
    master, backup = healthy
    psql(pair, master, "create table if not exists t_split (id int primary key, side text)")
    psql(pair, master, "insert into t_split values (1, 'before')")
    # Cut everything between the nodes (not their gateway): both serve, policy `available`.
    faults.partition(pair, "sync", "all")
    try:
        eventually(lambda: states(pair)[backup] == "MASTER", 60, what=f"{backup} MASTER too")
        # The old primary drops its lost standby after the grace and accepts writes alone.
        psql(pair, master, "insert into t_split values (2, 'old primary alone')", timeout=60)
        psql(pair, backup, "insert into t_split values (3, 'new primary')")
    finally:
        faults.heal(pair)
    # Healed: the newer timeline (the promoted node) keeps the role; the other yields, rewinds,
    # and keeps what only it had in a dated dump reported by escadm status.
    assert wait_pair(pair, 120) == (backup, master)
    rows = psql(pair, master, "select id from t_split order by id").stdout.split()
    assert rows == ["1", "3"]
    st = json.loads(escadm(master, pair, "status", "--json").stdout)
    assert st["diverged_dumps"], st
    dump = Path(st["diverged_dumps"][-1]).read_text()
    assert "t_split" in dump and "old primary alone" in dump
    assert "PRESERVED" in escadm(master, pair, "status").stdout


def _set_policy(lab: Lab, policy: str, grace: float = 2.0) -> None:
    for host in NODES:
        path = lab.node_paths(host).config_file
        cfg = load_config(path)
        rep = cfg.replication.model_copy(
            update={"on_standby_loss": policy, "standby_loss_grace_s": grace}
        )
        save_config(cfg.model_copy(update={"replication": rep}), path)
    for host in NODES:
        faults.signal_component(lab, host, "agent", faults.signal.SIGKILL)
    for host in NODES:
        faults.reboot(lab, host)


def test_strict_blocks_writes_until_standby_returns(healthy: tuple[str, str], pair: Lab) -> None:
    _set_policy(pair, "strict")
    try:
        master, backup = wait_pair(pair)
        psql(pair, master, "create table if not exists t_strict (id int)")
        faults.signal_component(pair, backup, "all", faults.signal.SIGKILL)
        done = threading.Event()

        def write() -> None:
            psql(pair, master, "insert into t_strict values (1)", timeout=300)
            done.set()

        threading.Thread(target=write, daemon=True).start()
        # The commit waits for the synchronous standby (it is not dropped under strict).
        eventually(
            lambda: (
                "SyncRep" in psql(pair, master, "select wait_event from pg_stat_activity").stdout
            ),
            30,
            what="commit waiting for the standby",
        )
        assert not done.is_set()
        assert states(pair)[master] == "MASTER"
        faults.reboot(pair, backup)
        assert done.wait(120), "the commit never finished after the standby came back"
        assert wait_pair(pair) == (master, backup)
        assert psql(pair, backup, "select count(*) from t_strict").stdout.strip() == "1"
    finally:
        _set_policy(pair, "available", grace=5.0)
        wait_pair(pair)


def test_available_continues_and_outdated_standby_is_not_promoted(
    healthy: tuple[str, str], pair: Lab
) -> None:
    master, backup = healthy
    faults.signal_component(pair, backup, "all", faults.signal.SIGKILL)
    psql(pair, master, "create table if not exists t_avail (id int)")
    psql(pair, master, "insert into t_avail values (1)", timeout=60)  # after the grace
    st = json.loads(escadm(master, pair, "status", "--json").stdout)
    assert st["degraded"] and st["peer_outdated_from"] is not None
    assert "DEGRADED" in escadm(master, pair, "status").stdout
    # The exposure, live: every write acknowledged alone is counted, and the clock holds.
    first = st["alone_transactions"]
    assert isinstance(first, int) and first >= 1, st  # at least the insert
    for i in range(3):
        psql(pair, master, f"insert into t_avail values ({100 + i})")
    later = json.loads(escadm(master, pair, "status", "--json").stdout)
    assert later["alone_transactions"] >= first + 3, (st, later)
    assert later["degraded_since"] == st["degraded_since"] is not None
    shown = escadm(master, pair, "ha", "status").stdout
    assert "write transactions" in shown and "the peer lacks" in shown, shown
    # The standby comes back outdated; while it is, it must not be promoted.
    faults.reboot(pair, backup)
    eventually(
        lambda: (
            json.loads(escadm(backup, pair, "status", "--json").stdout).get("self_outdated_from")
            is not None
            or not json.loads(escadm(master, pair, "status", "--json").stdout)["degraded"]
        ),
        60,
        what="standby learns it is outdated (or already caught up)",
    )
    wait_pair(pair)
    eventually(
        lambda: not json.loads(escadm(master, pair, "status", "--json").stdout)["degraded"],
        60,
        what="back in sync",
    )
    assert psql(pair, backup, "select count(*) from t_avail").stdout.strip() == "4"


def test_outdated_standby_refuses_promotion_when_primary_dies(
    healthy: tuple[str, str], pair: Lab
) -> None:
    master, backup = healthy
    # Stop only the standby's database: it stays up (agent, keepalived) but falls behind.
    faults.signal_component(pair, backup, "postgres", faults.signal.SIGSTOP)
    try:
        psql(pair, master, "create table if not exists t_out (id int)")
        psql(pair, master, "insert into t_out values (1)", timeout=60)  # after the grace
        eventually(
            lambda: json.loads(escadm(master, pair, "status", "--json").stdout)["degraded"],
            60,
            what="primary marks the standby outdated",
        )
        eventually(
            lambda: (
                json.loads(escadm(backup, pair, "status", "--json").stdout).get(
                    "self_outdated_from"
                )
                is not None
            ),
            60,
            what="standby knows",
        )
        faults.signal_component(pair, master, "all", faults.signal.SIGKILL)
    finally:
        faults.signal_component(pair, backup, "postgres", faults.signal.SIGCONT)
    # The primary is gone, the standby is outdated: it must not serve.
    eventually(
        lambda: (
            "outdated"
            in json.loads(escadm(backup, pair, "status", "--json").stdout).get("reason", "")
        ),
        60,
    )
    assert states(pair)[backup] != "MASTER"
    # The primary comes back: the pair re-forms with it as the primary.
    faults.reboot(pair, master)
    assert wait_pair(pair) == (master, backup)
