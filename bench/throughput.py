"""Northbound write throughput through the VIP: synchronous replication vs replication off.

    .venv/bin/python bench/throughput.py [--threads 8] [--duration 10] [--repeats 3]

Same lab, same run: first the pair as shipped (commits wait for the synchronous standby), then
with the standby node stopped and the primary dropped to asynchronous (replication off). Each
phase runs ``--repeats`` times; prints transactions/s and accept latency p50/p99 per phase and
the ratio replicated / unreplicated.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import dist, emit, fresh_pair, table
from esclab import faults
from esclab.lab import Lab, wait_until
from esclab.run import in_ns
from esclab.topology import NODES


def load(lab: Lab, threads: int, duration: float, prefix: str) -> dict[str, float]:
    api = lab.status()["api"]
    proc = subprocess.run(
        in_ns(
            "nb",
            sys.executable,
            "-m",
            "esclab.load",
            "--url",
            api["url"],
            "--user",
            api["user"],
            "--password-stdin",
            "--threads",
            str(threads),
            "--duration",
            str(duration),
            "--prefix",
            prefix,
        ),
        input=api["password"] + "\n",
        capture_output=True,
        text=True,
        timeout=duration + 120,
        check=True,
    )
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    lat = r["latencies_ms"]
    pct = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] if lat else float("nan")  # noqa: E731
    return {
        "tps": r["count"] / r["duration"],
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "errors": r["errors"],
    }


def degraded(lab: Lab, master: str) -> bool:
    res = subprocess.run(
        in_ns(master, str(Path(sys.executable).parent / "escadm"), "status", "--json"),
        capture_output=True,
        text=True,
        check=False,
        env={"ESC_ROOT": str(lab.node_paths(master).root), "PATH": "/usr/bin:/bin"},
    )
    try:
        st = json.loads(res.stdout)
    except ValueError:
        return False
    return bool(st.get("degraded")) and not st.get("db", {}).get("sync_names")


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    lab = fresh_pair()
    phases: dict[str, list[dict[str, float]]] = {"sync replication": [], "replication off": []}
    try:
        master = lab.master()
        assert master is not None
        standby = NODES[1 - NODES.index(master)]
        load(lab, args.threads, 3, "warmup")
        for i in range(args.repeats):
            phases["sync replication"].append(load(lab, args.threads, args.duration, f"s{i}"))
        faults.signal_component(lab, standby, "all", signal.SIGKILL)
        if not wait_until(lambda: degraded(lab, master), 60):
            raise RuntimeError("the primary did not drop to asynchronous")
        for i in range(args.repeats):
            phases["replication off"].append(load(lab, args.threads, args.duration, f"a{i}"))
    finally:
        lab.down()
    rows, figures = (
        [],
        {"threads": args.threads, "duration_s": args.duration, "repeats": args.repeats},
    )
    for name, rs in phases.items():
        tps = dist([r["tps"] for r in rs])
        p50 = dist([r["p50_ms"] for r in rs])
        p99 = dist([r["p99_ms"] for r in rs])
        errs = sum(int(r["errors"]) for r in rs)
        rows.append(
            [
                name,
                f"{tps['min']:.0f} / {tps['median']:.0f} / {tps['max']:.0f}",
                f"{p50['median']:.1f}",
                f"{p99['median']:.1f}",
                str(errs),
            ]
        )
        figures[name.replace(" ", "_")] = {"tps": tps, "p50_ms": p50, "p99_ms": p99, "errors": errs}
    ratio = (
        figures["sync_replication"]["tps"]["median"]  # type: ignore[index]
        / figures["replication_off"]["tps"]["median"]
    )  # type: ignore[index]
    figures["ratio"] = ratio
    print(
        f"tenant creates through the VIP, {args.threads} client threads in nb, "
        f"{args.duration:g} s x {args.repeats}"
    )
    print(table(rows, ["phase", "tx/s min / median / max", "p50 ms", "p99 ms", "errors"]))
    print(f"replicated / unreplicated throughput (medians): {ratio:.2f}")
    emit("throughput", figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
