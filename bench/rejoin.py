"""Rejoin of an old primary by pg_rewind versus a full re-clone, for a database of --size-mb.

    .venv/bin/python bench/rejoin.py [--size-mb 1024] [--runs 3]

Both are timed the same way: from the moment the node's agent boots until that node is BACKUP
with its database streaming from the primary (the agent's own view, `escadm status`).

- rewind: kill -9 of every process on the primary; the standby takes over and takes
  ``--churn-mb`` of writes; the old primary is booted and rejoins (pg_rewind, or a plain
  reconfigure when its WAL never went past the fork point: the agent's log names the method).
- re-clone: the standby is killed, its data directory removed, and it is booted: it clones the
  primary with pg_basebackup (the baseline).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import dist, emit, fmt, fresh_pair, table
from esclab import faults, scenarios
from esclab.lab import NODES, Lab
from esclab.orchestrate import other

DEADLINE_S = 1800.0


def streaming_backup(lab: Lab, host: str) -> bool:
    full, env = lab.exec_argv(host, ["escadm", "status", "--json"])
    res = subprocess.run(full, env=env, capture_output=True, text=True, timeout=30, check=False)
    try:
        st = json.loads(res.stdout)
    except ValueError:
        return False
    db = st.get("db") or {}
    return st.get("state") == "BACKUP" and bool(db.get("streaming"))


def wait_streaming(lab: Lab, host: str) -> float:
    t0 = time.monotonic()
    while not streaming_backup(lab, host):
        if time.monotonic() - t0 > DEADLINE_S:
            raise RuntimeError(f"{host} did not rejoin within {DEADLINE_S:.0f} s")
        time.sleep(0.1)
    return time.monotonic() - t0


def last_follow(lab: Lab, host: str) -> tuple[str, float]:
    """The method and duration of the node's last Follow action, from its agent log."""
    log = (lab.node_paths(host).log_dir / "esc_haagent.log").read_text()
    found = re.findall(r"following \S+: (\w+) in ([0-9.]+) s", log)
    return (found[-1][0], float(found[-1][1])) if found else ("?", float("nan"))


def healthy(lab: Lab) -> str:
    """Wait for a whole pair (standby synchronous, nobody outdated); the primary."""
    health = scenarios.wait_healthy(lab, 300)
    if not health.ok or health.master is None:
        raise RuntimeError(f"the pair is not whole: {health}")
    return health.master


def fill(lab: Lab, host: str, table_name: str, mb: int) -> None:
    """About ``mb`` MiB of rows (1 kB each), in 64 MiB transactions."""
    rows_per_mb = 1000
    done = 0
    while done < mb:
        step = min(64, mb - done)
        lab.psql(
            host,
            f"CREATE TABLE IF NOT EXISTS {table_name} (id bigserial PRIMARY KEY, pad text);"
            f"INSERT INTO {table_name} (pad) SELECT repeat(md5(g::text), 32)"
            f" FROM generate_series(1, {step * rows_per_mb}) g",
            timeout=600,
            check=True,
        )
        done += step


def db_size_mb(lab: Lab, host: str) -> float:
    out = lab.psql(host, "SELECT pg_database_size(current_database())", check=True).stdout
    return int(out.strip()) / 2**20


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--size-mb", type=int, default=1024)
    ap.add_argument("--churn-mb", type=int, default=16)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    lab = fresh_pair()
    rewinds: list[float] = []
    reclones: list[float] = []
    rewind_actions: list[float] = []
    reclone_actions: list[float] = []
    methods: list[str] = []
    try:
        master = healthy(lab)
        t = time.monotonic()
        fill(lab, master, "bench_big", args.size_mb)
        lab.psql(master, "CHECKPOINT", timeout=600, check=True)  # a loaded, settled database
        size = db_size_mb(lab, master)
        print(f"filled {size:.0f} MiB in {time.monotonic() - t:.0f} s", file=sys.stderr)
        for i in range(args.runs):
            # rewind: the old primary rejoins after a failover
            master = healthy(lab)
            backup = other(master)
            scenarios.SCENARIOS["kill-node"](lab, master)
            deadline = time.monotonic() + 120
            while lab.master() != backup:
                if time.monotonic() > deadline:
                    raise RuntimeError("no failover")
                time.sleep(0.05)
            fill(lab, backup, f"bench_churn_{i}", args.churn_mb)
            faults.heal(lab)
            faults.reboot(lab, master)
            rewinds.append(wait_streaming(lab, master))
            method, took = last_follow(lab, master)
            methods.append(method)
            rewind_actions.append(took)
            print(
                f"run {i + 1}: rewind {rewinds[-1]:.2f} s ({method} {took:.2f} s)", file=sys.stderr
            )
            # re-clone: the standby (that same node) loses its data directory
            healthy(lab)
            faults.signal_component(lab, master, "all", signal.SIGKILL)
            shutil.rmtree(lab.node_paths(master).pgdata)
            faults.reboot(lab, master)
            reclones.append(wait_streaming(lab, master))
            method, took = last_follow(lab, master)
            reclone_actions.append(took)
            print(
                f"run {i + 1}: re-clone {reclones[-1]:.2f} s ({method} {took:.2f} s)",
                file=sys.stderr,
            )
    finally:
        keep = Path(__file__).resolve().parents[1] / "test-artifacts" / "rejoin"
        keep.mkdir(parents=True, exist_ok=True)
        for host in NODES:
            log = lab.node_paths(host).log_dir / "esc_haagent.log"
            if log.exists():
                shutil.copy(log, keep / f"{host}-esc_haagent.log")
        lab.down()
    rw, rc = dist(rewinds), dist(reclones)
    rwa, rca = dist(rewind_actions), dist(reclone_actions)
    ratio = rw["median"] / rc["median"] if rc.get("n") and rw.get("n") else float("nan")
    ratio_a = rwa["median"] / rca["median"] if rca.get("n") and rwa.get("n") else float("nan")
    print(f"rejoin of a {size:.0f} MiB database, {args.runs} runs, churn {args.churn_mb} MiB")
    print(
        table(
            [
                ["rewind (old primary)", fmt(rw), fmt(rwa), ", ".join(sorted(set(methods)))],
                ["re-clone (baseline)", fmt(rc), fmt(rca), "pg_basebackup"],
            ],
            [
                "",
                "boot -> streaming min / median / p95 / max",
                "the database step alone",
                "method",
            ],
        )
    )
    print(f"rewind / re-clone, medians: boot -> streaming {ratio:.3f}, step alone {ratio_a:.3f}")
    emit(
        "rejoin",
        {
            "size_mb": round(size),
            "churn_mb": args.churn_mb,
            "runs": args.runs,
            "rewind": rw,
            "reclone": rc,
            "rewind_step": rwa,
            "reclone_step": rca,
            "methods": methods,
            "ratio": ratio,
            "ratio_step": ratio_a,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
