"""Quorum mode against the two-node pair and bare keepalived, measured in one run.

    .venv/bin/python bench/quorum.py --runs 10 [--advert-int 0.2] [--lease-ttl S]
        [--margin S] [--election-ms MS] [--heartbeat-ms MS] [--modes bare,two-node,quorum]

Three labs, one after the other (one lab at a time), the same machine and fault:

1. bare keepalived (no agent, no database): kill -9 of every process on the master node, a
   client polling the VIP every 20 ms (bench/failover.py's baseline);
2. the two-node pair (``ha.quorum = "none"``): kill -9 of every process on the primary node,
   then a planned switchover (``escadm ha switchover``), with a writer through the VIP
   (bench/failover.py's and bench/switchover.py's runs);
3. the same in quorum mode (``escadm lab up --quorum etcd``; the lease, margin and etcd's raft
   timing from ``[quorum]``'s defaults unless given, printed).

``--modes`` leaves some out (the baseline, bare keepalived, is always measured).

The write gap is from the last acknowledgement before the fault to the first one after it,
through the VIP. Every acknowledged write is checked on the primary afterwards (lost) and no
retry may run twice (duplicated). Prints min / median / p95 / max per mode and fault, and each
median over the bare-keepalived median.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import add_quorum_flags, dist, emit, fmt, quorum_settings, table
from esclab.lab import Lab
from esclab.scenarios import wait_healthy
from failover import baseline, one_run
from switchover import one_switchover


def measure(lab: Lab, runs: int) -> dict[str, list[dict[str, float]]]:
    out: dict[str, list[dict[str, float]]] = {"kill-node": [], "switchover": []}
    for i in range(runs):
        for fault in ("kill-node", "switchover"):
            health = wait_healthy(lab, 180)
            if not health.ok:
                raise RuntimeError(f"the pair is not healthy: {health.why_not}")
            if fault == "kill-node":
                r = one_run(lab, "kill-node", i)
            else:
                gap, c = one_switchover(lab, i)
                r = {"gap": gap, **c}
            out[fault].append(r)
            print(f"{fault} run {i + 1}: gap {r['gap']:.3f} s", file=sys.stderr, flush=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--advert-int", type=float, default=0.2)
    add_quorum_flags(ap)
    ap.add_argument("--modes", default="bare,two-node,quorum")
    args = ap.parse_args()
    modes = set(args.modes.split(","))
    if not modes <= {"bare", "two-node", "quorum"}:
        ap.error(f"--modes: {args.modes!r}: a list of bare, two-node, quorum")
    q = quorum_settings(ap, args)
    settings = q.model_dump(exclude_defaults=True)
    lab = Lab()
    results: dict[str, dict[str, list[dict[str, float]]]] = {}
    try:
        lab.down()
        lab.up("single", pair=False, advert_int=args.advert_int)
        base = baseline(lab, args.runs, args.advert_int)
        if "two-node" in modes:
            lab.start_pair(args.advert_int)
            results["two-node"] = measure(lab, args.runs)
        if "quorum" in modes:
            lab.down()
            lab.up(
                "single",
                pair=True,
                advert_int=args.advert_int,
                quorum="etcd",
                quorum_settings=settings,
            )
            results["quorum etcd"] = measure(lab, args.runs)
    finally:
        lab.down()
    bd = dist(base)
    rows = [["bare keepalived", "kill node", fmt(bd), "-", "-", "-", "1.00"]]
    figures: dict[str, object] = {
        "advert_int": args.advert_int,
        "runs": args.runs,
        "baseline": bd,
        "quorum": q.model_dump(),
    }
    for mode, by_fault in results.items():
        for fault, rs in by_fault.items():
            d = dist([r["gap"] for r in rs])
            acked = sum(int(r["acked"]) for r in rs)
            lost = sum(int(r["lost"]) for r in rs)
            dup = sum(int(r["duplicated"]) for r in rs)
            ratio = d["median"] / bd["median"] if bd.get("n") else float("nan")
            rows.append([mode, fault, fmt(d), str(acked), str(lost), str(dup), f"{ratio:.2f}"])
            figures[f"{mode}/{fault}"] = {
                **d, "acked": acked, "lost": lost, "duplicated": dup, "ratio": ratio,
            }  # fmt: skip
    print(
        f"write gap through the VIP, min / median / p95 / max over {args.runs} runs, advert_int "
        f"{args.advert_int:g} s; quorum: lease {q.lease_ttl_s} s, margin {q.margin_s:g} s, "
        f"etcd heartbeat {q.heartbeat_ms} ms, election {q.election_ms} ms"
    )
    print(table(rows, ["mode", "fault", "write gap", "acked", "lost", "dup", "median/bare"]))
    emit("quorum", figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
