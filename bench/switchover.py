"""Planned switchover: write gap through the VIP and losses, over repeated runs.

    .venv/bin/python bench/switchover.py [--runs 20] [--advert-int 0.2]

A writer in ``nb`` writes through the VIP every 20 ms; ``escadm ha switchover`` runs on the
primary; the write gap is the longest stretch without an acknowledgement from the request until
the pair is whole again. Alternates direction each run.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import dist, emit, fmt, fresh_pair, table
from esclab.lab import Lab
from esclab.orchestrate import WriterRun, check
from esclab.run import in_ns


def one_switchover(lab: Lab, i: int) -> tuple[float, dict[str, int]]:
    """One ``escadm ha switchover`` on the primary with a writer on: (write gap, check)."""
    master = lab.master()
    assert master is not None
    escadm = str(Path(sys.executable).parent / "escadm")
    w = WriterRun(lab, f"sw-{i}-{int(time.time())}").start()
    try:
        w.wait_acks(25)
        t0 = time.time()
        res = subprocess.run(
            in_ns(master, escadm, "ha", "switchover", "--wait", "60"),
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
            env={"ESC_ROOT": str(lab.node_paths(master).root), "PATH": "/usr/bin:/bin"},
        )
        if res.returncode != 0:
            raise RuntimeError(f"switchover failed: {res.stdout} {res.stderr}")
        if not lab.wait_pair(180):
            raise RuntimeError("the pair did not re-form")
        w.wait_acks(len(w.acks) + 25)
    finally:
        w.stop()
    return w.gap_around(t0), check(lab, w)


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--advert-int", type=float, default=0.2)
    args = ap.parse_args()
    lab = fresh_pair(args.advert_int)
    gaps: list[float] = []
    acked = lost = dup = 0
    try:
        for i in range(args.runs):
            if not lab.wait_pair(180):
                raise RuntimeError("the pair is not healthy")
            gap, r = one_switchover(lab, i)
            gaps.append(gap)
            acked, lost, dup = acked + r["acked"], lost + r["lost"], dup + r["duplicated"]
            print(f"switchover {i + 1}: gap {gaps[-1]:.3f} s", file=sys.stderr, flush=True)
    finally:
        lab.down()
    d = dist(gaps)
    print(f"planned switchover, write gap over {args.runs} runs, advert_int {args.advert_int:g} s")
    print(
        table(
            [["switchover", fmt(d), str(acked), str(lost), str(dup)]],
            ["", "write gap min / median / p95 / max", "acked", "lost", "dup"],
        )
    )
    emit(
        "switchover",
        {
            "advert_int": args.advert_int,
            "runs": args.runs,
            "gap": d,
            "acked": acked,
            "lost": lost,
            "duplicated": dup,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
