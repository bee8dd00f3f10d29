"""How long etcd answers no write when its leader dies, for each raft timing: what bounds the
lease of quorum mode.

    .venv/bin/python bench/etcd_election.py [--runs 20] [--timings 100/1000,50/500]
        [--client-timeout 0.25]

Three etcd 3.4 members on 127.0.0.1 (as tests/integration/test_etcd_driver.py starts them:
mutual TLS, pre-vote, each member a child of this process, stopped by PID). Each run kills the
current leader (SIGKILL), then a client of the two others writes a key every 10 ms, giving
each member ``--client-timeout`` per call as the keeper does (a member without a leader holds
a write until then); the gap is from the kill to the first write etcd acknowledged. The killed
member is started again and the next run waits for all three to answer. A holder keeps its
key only if a renewal succeeds within ``lease_ttl_s - margin_s`` of the previous one: the gap
after a leader loss must fit in that, less one renewal interval (the schema's rule on
``[quorum]``; docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import dist, emit, fmt, table
from esc.drivers.etcd import EtcdClient, Timing
from esc.errors import QuorumError
from esclab.lab_quorum import loopback_cluster


def member_id(c: EtcdClient) -> tuple[int, int]:
    """(this member's id, its leader's id) from etcd's status."""
    data = c.call("maintenance/status", {})
    header = data.get("header") or {}
    return int(header.get("member_id", 0)), int(data.get("leader", 0))


def one_timing(root: Path, timing: Timing, runs: int, timeout: float) -> list[float]:
    members, procs, tls = loopback_cluster(root, timing, "bench")
    gaps: list[float] = []
    try:
        for p in procs.values():
            p.start()
        for _ in range(runs):
            own = {m.name: EtcdClient([m.client_url], tls[m.name], 0.5) for m in members}
            deadline = time.monotonic() + 60
            leader = None
            while leader is None:
                if time.monotonic() > deadline:
                    raise RuntimeError("etcd did not form within 60 s")
                try:
                    ids = {n: member_id(c) for n, c in own.items()}
                    by_id = {mid: n for n, (mid, _) in ids.items()}
                    leaders = {lead for _, lead in ids.values()}
                    if len(leaders) == 1:
                        leader = by_id.get(leaders.pop())
                except QuorumError:
                    time.sleep(0.1)
            others = [m for m in members if m.name != leader]
            writer = EtcdClient([m.client_url for m in others], tls[others[0].name], timeout)
            writer.call("kv/put", {"key": "cHJvYmU=", "value": "MA=="})
            child = procs[leader].child
            pid = child.pid
            t0 = time.monotonic()
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
            while True:
                try:
                    writer.call("kv/put", {"key": "cHJvYmU=", "value": "MQ=="})
                    break
                except QuorumError:
                    time.sleep(0.01)
            gaps.append(time.monotonic() - t0)
            print(f"{timing}: leader {leader} killed, writes back after {gaps[-1]:.3f} s",
                  file=sys.stderr, flush=True)  # fmt: skip
            procs[leader].stop()
            procs[leader].start()
            for c in (*own.values(), writer):
                c.close()
    finally:
        for p in procs.values():
            p.stop()
    return gaps


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--timings", default="100/1000,50/500", help="heartbeat/election ms, ...")
    ap.add_argument(
        "--client-timeout", type=float, default=0.25, help="s per member and call (the keeper's)"
    )
    args = ap.parse_args()
    if shutil.which("etcd") is None:
        ap.error("etcd is not installed (apt-get install etcd-server)")
    timings = []
    for spec in args.timings.split(","):
        try:
            hb, el = (int(x) for x in spec.split("/"))
        except ValueError:
            ap.error(f"--timings: {spec!r} is not HEARTBEAT/ELECTION in ms")
        timings.append(Timing(hb, el))
    rows, figures = [], {}
    for timing in timings:
        root = Path(tempfile.mkdtemp(prefix="esc-etcd-bench-"))
        try:
            d = dist(one_timing(root, timing, args.runs, args.client_timeout))
        finally:
            shutil.rmtree(root, ignore_errors=True)
        key = f"{timing.heartbeat_ms}/{timing.election_ms}"
        rows.append([key, fmt(d), f"{d['median'] * 1000 / timing.election_ms:.2f}"])
        figures[key] = d
    print(f"no write acknowledged after killing etcd's leader, {args.runs} runs each, client "
          f"timeout {args.client_timeout:g} s, min / median / p95 / max")  # fmt: skip
    print(table(rows, ["heartbeat/election ms", "write gap", "median / election"]))
    emit("etcd_election", {"runs": args.runs, "client_timeout": args.client_timeout, **figures})
    return 0


if __name__ == "__main__":
    sys.exit(main())
