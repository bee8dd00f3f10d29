"""Anycast failover: write gap through the BGP anycast address against the VIP, in the same runs.

    .venv/bin/python bench/anycast.py [--runs 20] [--advert-int 0.2]

Two writers in ``nb`` write every 20 ms, one through the VIP (``192.0.2.100``), one through the
anycast address the primary announces to the lab router's BIRD over ExaBGP
(``203.0.113.200``). kill -9 of every process on the primary; each writer's gap is the time from
its last acknowledgement before the fault to its first after it. Both writers see the same
fault, so the difference of the two gaps is what BGP costs over VRRP: ExaBGP announcing on
the new primary, BIRD installing the route (the old route is gone when the dead node's TCP
session drops). Every acknowledged write of both writers is checked (lost, duplicated).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import dist, emit, fmt, fresh_pair, table
from esclab.lab import LAB_ANYCAST
from esclab.orchestrate import WriterRun, check
from esclab.scenarios import SCENARIOS, restore, wait_healthy


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--advert-int", type=float, default=0.2)
    args = ap.parse_args()
    lab = fresh_pair(args.advert_int)
    vip_gaps: list[float] = []
    any_gaps: list[float] = []
    diffs: list[float] = []
    acked = lost = dup = 0
    try:
        port = lab.status()["api"]["url"].rsplit(":", 1)[1].split("/")[0]
        anycast_url = f"https://{LAB_ANYCAST}:{port}/v0"  # the API is HTTPS only
        for i in range(args.runs):
            health = wait_healthy(lab, 300)
            if not health.ok or health.master is None:
                raise RuntimeError(f"the pair is not whole: {health}")
            stamp = int(time.time())
            w_vip = WriterRun(lab, f"av-{i}-{stamp}").start()
            w_any = WriterRun(lab, f"aa-{i}-{stamp}", url=anycast_url).start()
            try:
                w_vip.wait_acks(25)
                w_any.wait_acks(25)
                t0 = time.time()
                SCENARIOS["kill-node"](lab, health.master)
                for w in (w_vip, w_any):
                    deadline = time.time() + 120
                    while not any(a.t_ack > t0 for a in w.acks):
                        if time.time() > deadline:
                            raise RuntimeError(f"{w.prefix}: no write after the fault")
                        time.sleep(0.05)
                restore(lab, health.master)
                w_vip.wait_acks(len(w_vip.acks) + 10)
                w_any.wait_acks(len(w_any.acks) + 10)
            finally:
                w_vip.stop()
                w_any.stop()
            vip_gaps.append(w_vip.gap_around(t0))
            any_gaps.append(w_any.gap_around(t0))
            diffs.append(any_gaps[-1] - vip_gaps[-1])
            for w in (w_vip, w_any):
                r = check(lab, w)
                acked, lost, dup = acked + r["acked"], lost + r["lost"], dup + r["duplicated"]
            print(
                f"run {i + 1}: VIP {vip_gaps[-1]:.3f} s, anycast {any_gaps[-1]:.3f} s",
                file=sys.stderr,
                flush=True,
            )
    finally:
        lab.down()
    dv, da, dd = dist(vip_gaps), dist(any_gaps), dist(diffs)
    print(f"kill -9 of the primary node, {args.runs} runs, advert_int {args.advert_int:g} s")
    print(
        table(
            [
                ["VIP (VRRP)", fmt(dv)],
                ["anycast (BGP)", fmt(da)],
                ["anycast - VIP, same fault", fmt(dd)],
            ],
            ["write gap", "min / median / p95 / max"],
        )
    )
    print(f"acked {acked}, lost {lost}, duplicated {dup}")
    emit(
        "anycast",
        {
            "advert_int": args.advert_int,
            "runs": args.runs,
            "vip": dv,
            "anycast": da,
            "difference": dd,
            "acked": acked,
            "lost": lost,
            "duplicated": dup,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
