"""A bounded northbound load for the throughput benchmark, run inside the ``nb`` host.

    python -m esclab.load --url URL --user U --password-stdin --threads 8 --duration 10 \\
        --prefix tp1

Each thread creates tenants (one transaction each) back to back on its own keep-alive
connection for ``duration`` seconds; prints one JSON line: count, errors, duration, latencies
(ms, sorted sample of at most 20,000).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time

from esclab.writer import Client


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="esc-load")
    ap.add_argument("--url", required=True)
    ap.add_argument("--user", required=True)
    ap.add_argument("--password-stdin", action="store_true", required=True)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--prefix", required=True)
    args = ap.parse_args(argv)
    password = sys.stdin.readline().rstrip("\n")
    lat: list[float] = []
    errors = [0]
    lock = threading.Lock()
    end = time.monotonic() + args.duration

    def worker(k: int) -> None:
        client = Client(args.url, args.user, password, timeout=10.0)
        n = 0
        mine: list[float] = []
        bad = 0
        while time.monotonic() < end:
            n += 1
            name = f"{args.prefix}-{k}-{n}"
            t0 = time.perf_counter()
            try:
                status, _ = client.request(
                    "POST", "/tenants", {"name": name}, {"ESC-Transaction-Id": name}
                )
            except OSError:
                bad += 1
                continue
            if status == 202:
                mine.append((time.perf_counter() - t0) * 1000)
            else:
                bad += 1
        with lock:
            lat.extend(mine)
            errors[0] += bad

    t_start = time.monotonic()
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(args.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t_start
    lat.sort()
    step = max(1, len(lat) // 20000)
    print(
        json.dumps(
            {
                "count": len(lat),
                "errors": errors[0],
                "duration": elapsed,
                "latencies_ms": lat[::step],
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
