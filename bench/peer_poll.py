"""What one peer poll costs, plain (the HMAC alone) and over mutual TLS with the pair CA: the
agent's real poller against its real peer API server on 127.0.0.1, one connection per poll as
in the product (the poller polls every 0.1 s; a view older than ``peer_timeout_s`` is stale).

    .venv/bin/python bench/peer_poll.py [--polls 300] [--rounds 3]

Prints the latency of a poll (connect, TLS handshake, request, MAC checks, parse) and the CPU
time both ends spent per poll, alternating plain and TLS rounds.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from common import dist, emit, fmt, table
from esc import pki
from esc.agent.api import PeerPoller, serve_peer
from esc.agent.peer_tls import PeerTls
from esc.config.types import decimal_int

SECRET = "bench-secret-0123456789abcdefghijklmnopqrstuv"
VIEW: dict[str, Any] = {
    "node": "esc-ha-1", "state": "MASTER", "db_role": "primary", "timeline": 3,
    "lsn": 50772808, "receive_lsn": 0, "replay_lag_s": 0.0, "streaming": False,
    "serving": True, "vip_held": True, "announced": False, "outdated_lsn": None,
    "handing_over": False, "reason": "serving as primary",
}  # fmt: skip


def handle(method: str, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    return (200, VIEW) if (method, path) == ("GET", "/peer") else (404, {})


def round_(polls: int, tls: tuple[PeerTls, PeerTls] | None) -> tuple[list[float], float]:
    srv = serve_peer(
        "127.0.0.1", 0, SECRET, handle, self_name="esc-ha-1", peer_name="esc-ha-0",
        poll_interval=0.05, tls=tls[0] if tls else None,
    )  # fmt: skip
    port = int(srv.server_address[1])
    p = PeerPoller(
        "127.0.0.1", port, SECRET, interval=0.1, timeout=2.0, self_name="esc-ha-0",
        peer_name="esc-ha-1", tls=tls[1] if tls else None,
    )  # fmt: skip
    took: list[float] = []
    cpu0 = time.process_time()
    try:
        for _ in range(polls):
            t0 = time.perf_counter()
            p.fetch()
            took.append(time.perf_counter() - t0)
    finally:
        cpu = time.process_time() - cpu0
        srv.shutdown()
        srv.server_close()
    return took, cpu / polls


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--polls", type=decimal_int, default=300)
    ap.add_argument("--rounds", type=decimal_int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="esc-peer-poll-") as d:
        root = Path(d)
        ca = pki.create_ca(root / "ca")
        ends = []
        for name in ("esc-ha-1", "esc-ha-0"):
            issued = pki.issue(ca, root / name, name, ["127.0.0.1"])
            ends.append(PeerTls(ca.cert, issued.cert, issued.key))
        tls = (ends[0], ends[1])
        lat: dict[str, list[float]] = {"plain": [], "tls": []}
        cpu: dict[str, list[float]] = {"plain": [], "tls": []}
        for _ in range(args.rounds):
            for kind in ("plain", "tls"):
                took, per = round_(args.polls, tls if kind == "tls" else None)
                lat[kind] += took
                cpu[kind].append(per)
    figures = {k: {**dist(v), "cpu_per_poll": sum(cpu[k]) / len(cpu[k])} for k, v in lat.items()}
    base = figures["plain"]["median"]
    rows = [
        [
            k,
            fmt(figures[k], "ms", 1000),
            f"{figures[k]['cpu_per_poll'] * 1000:.2f} ms",
            f"{figures[k]['median'] / base:.2f}",
        ]
        for k in lat
    ]
    print(f"one peer poll, {args.rounds} x {args.polls} polls each, both ends in this process")
    print(table(rows, ["link", "latency min / median / p95 / max", "CPU per poll", "median/plain"]))
    emit("peer_poll", {"polls": args.polls, "rounds": args.rounds, **figures})


if __name__ == "__main__":
    main()
