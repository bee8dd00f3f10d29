"""How long one look at the database takes (``PostgresDriver.status()``, once per agent cycle).

    .venv/bin/python bench/status.py [--samples 500]

In the lab pair: the driver of each node, built from its own config as the agent builds it, is
asked ``status()`` N times on the primary, on the streaming standby, and on the standby with
PostgreSQL killed (stopped: answered from the files, no query). Baseline in the same run: one
``SELECT 1`` over a fresh psycopg connection to the same socket, the cost the kept status
connection avoids.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).parent))
from common import dist, emit, fmt, fresh_pair, table
from esc.config.schema import load_config
from esc.drivers.postgres import PostgresDriver
from esc.model import DbRole
from esclab import faults
from esclab.lab import Lab
from esclab.orchestrate import other
from esclab.scenarios import restore, wait_healthy


def driver(lab: Lab, host: str) -> PostgresDriver:
    cfg = load_config(lab.node_paths(host).config_file)
    assert cfg.ha is not None
    addr = str(lab.topology().address(host, lab.topology().sync_network).ip)
    return PostgresDriver.from_config(cfg, lab.node_paths(host), self_addr=addr)


def timed(fn: object, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()  # type: ignore[operator]
        out.append(time.perf_counter() - t0)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--samples", type=int, default=500)
    args = ap.parse_args()
    lab = fresh_pair()
    results: dict[str, list[float]] = {}
    try:
        health = wait_healthy(lab, 300)
        if not health.ok or health.master is None:
            raise RuntimeError(f"the pair is not whole: {health}")
        primary, standby = health.master, other(health.master)
        for name, host, role in (
            ("primary", primary, DbRole.PRIMARY),
            ("standby", standby, DbRole.STANDBY),
        ):
            drv = driver(lab, host)
            if drv.status().role is not role:
                raise RuntimeError(f"{host} is not {role}")
            results[name] = timed(drv.status, args.samples)
        sock = str(lab.node_paths(primary).pg_socket_dir)

        def fresh_select() -> None:
            with psycopg.connect(host=sock, user="postgres", dbname="postgres") as conn:
                conn.execute("SELECT 1")

        results["baseline: new connection + SELECT 1"] = timed(fresh_select, args.samples)
        # The standby's agent first, so nothing restarts its PostgreSQL while we look.
        faults.signal_component(lab, standby, "agent", signal.SIGKILL)
        faults.signal_component(lab, standby, "postgres", signal.SIGKILL)
        drv = driver(lab, standby)
        if drv.status().role is not DbRole.STOPPED:
            raise RuntimeError("the standby's PostgreSQL does not look stopped")
        results["stopped"] = timed(drv.status, args.samples)
        restore(lab, standby)
    finally:
        lab.down()
    dists = {k: dist(v) for k, v in results.items()}
    print(f"PostgresDriver.status(), {args.samples} samples each")
    print(
        table([[k, fmt(d, "ms", 1e3)] for k, d in dists.items()], ["", "min / median / p95 / max"])
    )
    base = dists["baseline: new connection + SELECT 1"]["median"]
    print(f"primary median / baseline median = {dists['primary']['median'] / base:.3f}")
    emit("status", {"samples": args.samples, **{k.split(":")[0]: d for k, d in dists.items()}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
