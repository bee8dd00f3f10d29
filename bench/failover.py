"""Unplanned failover: write gap through the VIP per fault, against bare keepalived.

    .venv/bin/python bench/failover.py --runs 20 [--advert-int 0.2] [--faults kill-node,...]

For each fault, N runs: a writer in ``nb`` writes through the VIP every 20 ms (its own
transaction id per write, retried with the same id until acknowledged); the fault hits the
primary; the write gap is the time from the last acknowledgement before the fault to the first
one after it. Each run then restores the pair and checks that every acknowledged write is on the
primary (lost) and that no retry ran twice (duplicated).

Baseline, in the same run and lab: bare keepalived (same advert_int, no agent) moving the VIP
between two tiny HTTP servers; a client in ``nb`` polls the VIP every 20 ms; kill -9 of every
process on the master node. Prints our median / baseline median per fault.

``diskfull`` fills the primary's data filesystem (its data directory and WAL) and keeps it
full for ``HOLD_S`` (20 s) before restoring the pair: the gap is how long writes stop while
the pair moves off the full node.

``partition-replication`` (PostgreSQL's port cut between the nodes, VRRP and the agents' API
open) is not a failover: the primary keeps the role and its commits wait for the lost standby
until the standby-loss grace ends (policy ``available``), then go on alone. Its write gap is
the time the primary takes to see the standby gone (its WAL sender's timeout, 5 s) plus that
grace; it has no baseline ratio.

Every run starts from a whole pair (``wait_healthy``: the standby streaming and named
synchronous again, nobody outdated), not just MASTER + BACKUP state files: a standby still
outdated by the previous run would refuse to take over.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import dist, emit, fmt, fresh_pair, table
from esc.config.schema import load_config
from esclab import faults
from esclab.lab import LAB_VIP, Lab, kill_all_in, wait_until
from esclab.orchestrate import WriterRun, check
from esclab.run import in_ns, run
from esclab.scenarios import NOT_FAILOVER, SCENARIOS, restore, wait_healthy
from esclab.topology import NODES

VIP = LAB_VIP["single"]
PROBE = r"""
import sys, time, urllib.request
while True:
    t = time.time()
    try:
        body = urllib.request.urlopen("http://VIP:8080/", timeout=0.5).read().decode().strip()
        print(f"{t:.4f} {body}", flush=True)
    except Exception:
        pass
    time.sleep(max(0.0, 0.02 - (time.time() - t)))
""".replace("VIP", VIP)


def bare_keepalived_conf(node: str, me: str, peer: str, prio: int, adv: float, d: Path) -> str:
    return f"""global_defs {{
    router_id {node}
    vrrp_version 3
    vrrp_garp_master_delay 1
    vrrp_garp_master_repeat 5
}}
vrrp_instance B {{
    state BACKUP
    nopreempt
    interface eth0
    virtual_router_id 100
    priority {prio}
    advert_int {adv:g}
    unicast_src_ip {me}
    unicast_peer {{
        {peer}
    }}
    virtual_ipaddress {{
        {VIP}/32 dev eth0
    }}
}}
"""


def vip_holder() -> str | None:
    for n in NODES:
        if f" {VIP}/" in run(["ip", "-n", n, "-o", "addr", "show"]).stdout:
            return n
    return None


def start_bare_node(lab: Lab, node: str, adv: float) -> None:
    d = lab.root / "bench" / node
    d.mkdir(parents=True, exist_ok=True)
    (d / "index.html").write_text(node + "\n")
    addrs = {n: str(lab.topology().address(n, "sync").ip) for n in NODES}
    peer = NODES[1 - NODES.index(node)]
    prio = 101 if node == NODES[0] else 100
    (d / "ka.conf").write_text(bare_keepalived_conf(node, addrs[node], addrs[peer], prio, adv, d))
    for p in d.glob("*.pid"):
        p.unlink()
    log = open(d / "out.log", "ab")  # noqa: SIM115 - handed to the children
    subprocess.Popen(
        in_ns(
            node,
            sys.executable,
            "-m",
            "http.server",
            "8080",
            "--bind",
            "0.0.0.0",
            "--directory",
            str(d),
        ),
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    subprocess.Popen(
        in_ns(
            node,
            "keepalived",
            "-n",
            "-l",
            "-P",
            "-f",
            str(d / "ka.conf"),
            "-p",
            str(d / "ka.pid"),
            "-r",
            str(d / "vrrp.pid"),
        ),
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    log.close()


def baseline(lab: Lab, runs: int, adv: float) -> list[float]:
    """Bare keepalived: kill -9 of every process on the master -> client served by the peer."""
    for node in NODES:
        start_bare_node(lab, node, adv)
    probe = subprocess.Popen(
        in_ns("nb", sys.executable, "-c", PROBE), stdout=subprocess.PIPE, text=True
    )
    seen: list[tuple[float, str]] = []

    def read() -> None:
        assert probe.stdout is not None
        for line in probe.stdout:
            t, who = line.split()
            seen.append((float(t), who))

    threading.Thread(target=read, daemon=True).start()
    gaps: list[float] = []
    try:
        for _ in range(runs):
            if not wait_until(
                lambda: vip_holder() is not None and seen and time.time() - seen[-1][0] < 0.2, 60
            ):
                raise RuntimeError("bare keepalived: nobody serves the VIP")
            master = vip_holder()
            assert master is not None
            time.sleep(0.5)  # a steady stream of successes before the fault
            t_fault = time.time()
            kill_all_in(master)
            new = NODES[1 - NODES.index(master)]
            if not wait_until(
                lambda t0=t_fault, n=new: any(t > t0 and w == n for t, w in seen), 30
            ):
                raise RuntimeError("bare keepalived: no failover")
            before = [t for t, w in seen if t <= t_fault]
            first = next(t for t, w in seen if t > t_fault and w == new)
            gaps.append(first - before[-1])
            # The dead node boots: its stale VIP goes (as at boot), its processes start again.
            run(["ip", "-n", master, "addr", "del", f"{VIP}/32", "dev", "eth0"], check=False)
            start_bare_node(lab, master, adv)
            wait_until(lambda m=master: len(faults.component_pids(m, "keepalived")) >= 2, 10)
    finally:
        probe.kill()
        for node in NODES:
            kill_all_in(node)
            run(["ip", "-n", node, "addr", "del", f"{VIP}/32", "dev", "eth0"], check=False)
    return gaps


# Faults that last: held this long before the pair is restored, so that the gap measures how
# the pair copes with them (a full disk lets writes go on for a while: preallocated WAL, free
# space left in the table's pages) rather than how soon the bench heals them.
HOLD_S = {"diskfull": 20.0}


def one_run(lab: Lab, fault: str, i: int) -> dict[str, float]:
    master = lab.master()
    assert master is not None
    w = WriterRun(lab, f"{fault}-{i}-{int(time.time())}").start()
    try:
        w.wait_acks(25)
        t_fault = time.time()
        SCENARIOS[fault](lab, master)
        if not wait_until(lambda: any(a.t_ack > t_fault for a in w.acks), 90):
            raise RuntimeError(f"{fault}: no write acknowledged after the fault")
        hold = t_fault + HOLD_S.get(fault, 0.0)
        while time.time() < hold:
            time.sleep(0.1)
        restore(lab, master)
        if not lab.wait_pair(180):
            raise RuntimeError(f"{fault}: the pair did not re-form")
        w.wait_acks(len(w.acks) + 25)
    finally:
        w.stop()
    # The longest stretch without an ack from the fault until the pair is whole again
    # (restore and rejoin included: they must not stall writes either).
    gap = w.gap_around(t_fault)
    return {"gap": gap, **check(lab, w)}


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--advert-int", type=float, default=0.2)
    ap.add_argument("--faults", default=",".join(SCENARIOS))
    ap.add_argument("--no-baseline", action="store_true")
    args = ap.parse_args()
    chosen = args.faults.split(",")
    lab = fresh_pair(args.advert_int, pair=False)
    grace = float("nan")
    try:
        base = [] if args.no_baseline else baseline(lab, args.runs, args.advert_int)
        lab.start_pair(args.advert_int)
        grace = load_config(lab.node_paths(NODES[0]).config_file).replication.standby_loss_grace_s
        results: dict[str, list[dict[str, float]]] = {}
        for fault in chosen:
            results[fault] = []
            for i in range(args.runs):
                health = wait_healthy(lab, 180)
                if not health.ok:
                    raise RuntimeError(f"the pair is not healthy: {health.why_not}")
                results[fault].append(one_run(lab, fault, i))
                print(
                    f"{fault} run {i + 1}: gap {results[fault][-1]['gap']:.3f} s",
                    flush=True,
                    file=sys.stderr,
                )
    finally:
        lab.down()
    bd = dist(base)
    rows = [["bare keepalived (kill node)", fmt(bd), "-", "-", "-", "1.00"]]
    figures: dict[str, object] = {
        "advert_int": args.advert_int,
        "runs": args.runs,
        "baseline": bd,
        "standby_loss_grace_s": grace,
    }
    for fault, rs in results.items():
        d = dist([r["gap"] for r in rs])
        acked = sum(int(r["acked"]) for r in rs)
        lost = sum(int(r["lost"]) for r in rs)
        dup = sum(int(r["duplicated"]) for r in rs)
        ratio: float | None = d["median"] / bd["median"] if bd.get("n") else float("nan")
        if fault in NOT_FAILOVER:
            ratio = None  # the same primary goes on after the grace: nothing to compare
        shown = f"- (no failover, grace {grace:g} s)" if ratio is None else f"{ratio:.2f}"
        rows.append([fault, fmt(d), str(acked), str(lost), str(dup), shown])
        figures[fault] = {**d, "acked": acked, "lost": lost, "duplicated": dup, "ratio": ratio}
    print(
        f"write gap, min / median / p95 / max over {args.runs} runs, advert_int "
        f"{args.advert_int:g} s, {len(NODES)} nodes on one 2-core machine"
    )
    print(table(rows, ["fault", "write gap", "acked", "lost", "dup", "median/baseline"]))
    emit("failover", figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
