"""Rolling upgrade of a booted pair: the write gap through the VIP, per phase, over runs.

    .venv/bin/python bench/upgrade.py [--runs 5] [--checkout DIR]

On a booted lab (``escadm lab up --hosts booted``: Debian 12 hosts, the .deb installed), each
run installs a newer build (``scripts/build-deb --version``) the way docs/operations.md says:
``dpkg -i`` on the standby (its agent restarts), ``escadm ha switchover`` on the primary, then
``dpkg -i`` on the old primary. A writer in ``nb`` writes through the VIP every 20 ms. Each
phase's write gap is the longest stretch without an acknowledgement from its start to the
next phase's; the baseline is the longest stretch in an equally long quiet window of the same
run (no fault), so ratios show what the upgrade adds. ``--checkout`` builds the packages from
another checkout (a ``git worktree`` of a commit), so edits in this tree stay out.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import dist, emit, fmt, table
from esclab import rolling
from esclab.guide import CHECKOUT, build_deb
from esclab.lab import Lab
from esclab.orchestrate import WriterRun, check

PHASES = ("standby", "switchover", "old primary")


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--checkout", type=Path, default=CHECKOUT)
    args = ap.parse_args()
    lab = Lab()
    lab.down()
    dist_dir = lab.root / "dist"
    first = build_deb(Path("/var/tmp/esc-bench-dist"), checkout=args.checkout)
    base = first.name.split("_")[1]
    debs = [
        build_deb(
            Path("/var/tmp/esc-bench-dist"), version=f"{base}.{i + 1}", checkout=args.checkout
        )
        for i in range(args.runs)
    ]
    gaps: dict[str, list[float]] = {p: [] for p in (*PHASES, "whole upgrade", "baseline")}
    acked = lost = dup = 0
    os.environ["ESC_LAB_DEB"] = str(first)
    try:
        lab.up("single", hosts="booted")
        for i, deb in enumerate(debs):
            (dist_dir / deb.name).write_bytes(deb.read_bytes())
            w = WriterRun(lab, f"up-{i}-{int(time.time())}", url=lab.status()["api"]["url"])
            w.start()
            try:
                w.wait_acks(25)
                marks = rolling.rolling_upgrade(lab, dist_dir / deb.name)
                w.wait_acks(len(w.acks) + 25)
                length = marks["end"] - marks["standby"]
                quiet_start = time.time()
                w.wait_acks(len(w.acks) + max(25, int(length / w.interval)), timeout=length * 3)
            finally:
                w.stop()
            # each phase up to the next one's start; the last one a second past its end
            ends = [marks[p] for p in PHASES[1:]] + [marks["end"] + 1.0]
            for phase, end in zip(PHASES, ends, strict=True):
                gaps[phase].append(w.gap_around(marks[phase], until=end))
            gaps["whole upgrade"].append(w.gap_around(marks["standby"], until=marks["end"] + 1))
            gaps["baseline"].append(w.gap_around(quiet_start, until=quiet_start + length))
            r = check(lab, w)
            acked, lost, dup = acked + r["acked"], lost + r["lost"], dup + r["duplicated"]
            print(
                f"upgrade {i + 1}: "
                + ", ".join(f"{p} {gaps[p][-1]:.3f} s" for p in gaps)
                + f", lost {r['lost']}, dup {r['duplicated']}",
                file=sys.stderr,
                flush=True,
            )
    finally:
        lab.down()
    figures = {p: dist(v) for p, v in gaps.items()}
    base_median = figures["baseline"].get("median") or 0.0
    rows = [
        [
            p,
            fmt(d),
            f"{d['median'] / base_median:.1f}x" if base_median and d.get("n") else "-",
        ]
        for p, d in figures.items()
    ]
    print(f"rolling upgrade of a booted pair, write gap through the VIP, {args.runs} runs")
    print(table(rows, ["phase", "write gap min / median / p95 / max", "median vs baseline"]))
    print(f"acknowledged {acked}, lost {lost}, duplicated {dup}")
    emit("upgrade", {"runs": args.runs, "gaps": figures, "acked": acked, "lost": lost, "dup": dup})
    return 0


if __name__ == "__main__":
    sys.exit(main())
