"""Spurious failovers: a healthy pair under CPU saturation and packet loss must not fail over.

    .venv/bin/python bench/stability.py [--minutes 10] [--loss 1] [--advert-int 0.2]
        [--quorum etcd [--lease-ttl S] [--margin S] [--election-ms MS] [--heartbeat-ms MS]]

Both cores are saturated by busy loops started inside each node (2 per node, so 4 runnable
processes compete with the pair for 2 cores), and each node drops ``--loss`` % of the packets it
sends on the sync network (nftables; netem where the kernel has it). A writer runs through the
VIP throughout. Counts role changes (transitions into MASTER) in both nodes' histories, and
writes lost / duplicated; prints the longest write gap seen.

With ``--quorum etcd`` the witness drops the same share of what it sends (it is on the sync
network only) and the pair's leader-key changes are counted too: a primary that failed to
renew its lease in time stops serving even when it takes the key again.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import add_quorum_flags, emit, fresh_pair, quorum_settings, table
from esclab import faults
from esclab.lab import Lab
from esclab.orchestrate import WriterRun, check
from esclab.run import in_ns
from esclab.topology import NODES, WITNESS

BURN = "import time\nend = time.monotonic() + {s}\nwhile time.monotonic() < end:\n    pass\n"


def transitions(lab_root: Path, host: str) -> list[dict[str, object]]:
    path = lab_root / "nodes" / host / "var" / "lib" / "esc" / "history.jsonl"
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def leader_key_changes(lab: Lab) -> int:
    """How many times a keeper of either node has taken the leader key (its log's lines)."""
    n = 0
    for host in NODES:
        log = lab.node_paths(host).log_dir / "esc_haagent.log"
        if log.exists():
            n += sum(
                1
                for line in log.read_text(errors="replace").splitlines()
                if "leader key (lease" in line
            )
    return n


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--loss", type=float, default=1.0)
    ap.add_argument("--advert-int", type=float, default=0.2)
    ap.add_argument("--quorum", choices=("none", "etcd"), default="none")
    add_quorum_flags(ap)
    args = ap.parse_args()
    q = quorum_settings(ap, args)
    if args.quorum != "etcd" and q.model_dump(exclude_defaults=True):
        ap.error("--lease-ttl, --margin, --election-ms, --heartbeat-ms: only with --quorum etcd")
    seconds = args.minutes * 60
    lab = fresh_pair(
        args.advert_int, quorum=args.quorum, quorum_settings=q.model_dump(exclude_defaults=True)
    )
    burners: list[subprocess.Popen[bytes]] = []
    lossy = [*NODES, WITNESS] if args.quorum == "etcd" else list(NODES)
    try:
        master = lab.master()
        before = {h: len(transitions(lab.root, h)) for h in NODES}
        keys_before = leader_key_changes(lab) if args.quorum == "etcd" else 0
        for host in lossy:
            faults.netem(lab, host, lab.topology().sync_network, loss=args.loss)
        for host in NODES:
            for _ in range(2):
                burners.append(
                    subprocess.Popen(in_ns(host, sys.executable, "-c", BURN.format(s=seconds + 30)))
                )
        w = WriterRun(lab, f"stab-{int(time.time())}").start()
        t0 = time.time()
        time.sleep(seconds)  # the measurement window itself (no state is being waited for)
        w.stop()
        after = {h: transitions(lab.root, h)[before[h] :] for h in NODES}
        keys = leader_key_changes(lab) - keys_before if args.quorum == "etcd" else 0
        faults.heal(lab)
        result = check(lab, w)
        gaps = sorted(b.t_ack - a.t_ack for a, b in zip(w.acks, w.acks[1:], strict=False))
        longest = gaps[-1] if gaps else float("nan")
        to_master = sum(1 for h in NODES for t in after[h] if t["to"] == "MASTER")
        changes = [
            f"{h}: {t['from']} -> {t['to']}: {t['reason']}"
            for h in NODES
            for t in after[h]
            if t["from"] != t["to"]
        ]
        end_master = lab.master()
    finally:
        for p in burners:
            p.kill()
        lab.down()
    print(
        f"{args.minutes:g} min, 2 busy loops per node on 2 cores, {args.loss:g}% loss on the "
        f"sync network, advert_int {args.advert_int:g} s, writer through the VIP"
    )
    if args.quorum == "etcd":
        print(
            f"quorum etcd: lease {q.lease_ttl_s} s, margin {q.margin_s:g} s, etcd heartbeat "
            f"{q.heartbeat_ms} ms, election {q.election_ms} ms; leader key taken {keys} times"
        )
    print(
        table(
            [
                [
                    str(to_master),
                    master or "?",
                    end_master or "?",
                    str(result["acked"]),
                    str(result["lost"]),
                    str(result["duplicated"]),
                    f"{longest:.3f}",
                ]
            ],
            [
                "failovers",
                "master before",
                "master after",
                "acked",
                "lost",
                "dup",
                "longest write gap s",
            ],
        )
    )
    for c in changes:
        print("  " + c)
    emit(
        "stability",
        {
            "minutes": args.minutes,
            "loss_pct": args.loss,
            "advert_int": args.advert_int,
            "quorum": q.model_dump() if args.quorum == "etcd" else None,
            "leader_key_taken": keys,
            "failovers": to_master,
            "state_changes": len(changes),
            "longest_gap_s": longest,
            "window_start": t0,
            **result,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
