"""Nemesis: a randomized schedule of faults against the pair, with writers running throughout.

    .venv/bin/python bench/nemesis.py --faults 200 --seed 1 [--writers 2] [--log FILE]
    .venv/bin/python bench/nemesis.py --faults 200 --seed 1 --dry-run   # the schedule only

One lab, one pair (policy ``available``), ``--writers`` northbound writers in ``nb`` writing
through the VIP for the whole run (each its own tenant stream, every write retried with the
same transaction id until acknowledged), and ``--direct-writers`` more that reach each node by
its own address (an orchestrator configured with both: on a failure or a 503 it tries the
other). Every partition is healed while all of them write. The schedule (esclab.nemesis,
deterministic for a seed) mixes: kill -9 of every process of a node, of keepalived, of
PostgreSQL, of the service; link down on the sync network; SIGSTOP of a whole node; partitions
between the nodes (VRRP only, replication only, both, everything); packet loss; reboots; double
faults (both nodes killed at once then cold-booted in either order; the primary killed, then the
node that took over, the stale one booted first; a background fault left in force while the
primary is hit).

Each step: inject -> hold (at least ``hold_s``; for a fault writes survive, until the first
write acknowledged after it, at most 30 s) -> restore (heal the network and paused processes,
boot every node whose agent is gone, in the step's order) -> wait until the pair is whole (both
agents answer, one MASTER serving with the VIP, one BACKUP streaming and named synchronous,
nobody outdated) and a write is acknowledged after the restore, at most ``--recover-timeout``.
A step that misses that deadline counts as unrecovered (it is not retried away); the bench
then power-cycles what is not whole so the run can go on, and stops injecting if even that
fails. Split brains and preserved diverged rows are what the agents reported during the step
(their logs, histories and ``diverged/`` dumps).

At the end: heal, wait for a whole pair (time to healthy after heal), stop the writers, look up
every acknowledged write on the primary (lost: missing there; of those, how many a diverged
dump kept; a direct writer's write acknowledged by a node while its status said it acknowledged
alone, and kept in its dump, is what ``available`` allows: counted apart, not as lost) and
count rows present twice or retries executed twice (duplicated). Every step is logged as one
JSON line to ``--log``; a table and the final JSON line go to stdout. Exit status 1 if anything
was lost, duplicated or unrecovered.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

sys.path.insert(0, str(Path(__file__).parent))
from common import dist, emit, fmt, fresh_pair, table
from esc.errors import EscError
from esclab import faults
from esclab.exposure import AloneWatch, dumps, read_dump
from esclab.faults import PartitionKind
from esclab.lab import Lab
from esclab.nemesis import (
    DOUBLE,
    KINDS,
    QUORUM_WEIGHTS,
    SPLIT_BRAIN,
    VIP_REFUSED,
    AloneWindows,
    Fault,
    FaultStep,
    Tally,
    allowed_losses,
    dump_rows,
    dump_tenants,
    history_since,
    mentions,
    parse_weights,
    schedule,
    summarize,
    tally,
    tenant_numbers,
)
from esclab.orchestrate import WriterRun
from esclab.scenarios import SCENARIOS, PairHealth, agent_status, wait_healthy
from esclab.topology import NODES, WITNESS

EFFECT_TIMEOUT_S = 30.0  # a fault writes survive: the first ack after it, at most this late
DEFAULT_LOG = Path(__file__).resolve().parents[1] / "test-artifacts" / "nemesis.jsonl"

Injector = Callable[[Lab, Fault, list[str]], None]


# --- injecting -------------------------------------------------------------------------------


def _each(scenario: str) -> Injector:
    def inject(lab: Lab, _f: Fault, hosts: list[str]) -> None:
        for host in hosts:
            SCENARIOS[scenario](lab, host)

    return inject


def _partition(*only: PartitionKind) -> Injector:
    def inject(lab: Lab, _f: Fault, _hosts: list[str]) -> None:
        for kind in only:  # nft scripts add up: "vrrp" then "db" cuts both
            faults.partition(lab, lab.topology().sync_network, kind)

    return inject


def _loss(lab: Lab, f: Fault, hosts: list[str]) -> None:
    for host in hosts:
        faults.netem(lab, host, lab.topology().sync_network, loss=f.loss_pct)


def _reboot(lab: Lab, _f: Fault, hosts: list[str]) -> None:
    for host in hosts:
        faults.reboot(lab, host)


def _isolate(only: PartitionKind) -> Injector:
    def inject(lab: Lab, _f: Fault, hosts: list[str]) -> None:
        for host in hosts:  # cut from its peer and the witness (quorum mode)
            faults.isolate(lab, host, only)

    return inject


def _kill_witness(lab: Lab, _f: Fault, _hosts: list[str]) -> None:
    faults.signal_component(lab, WITNESS, "all", signal.SIGKILL)  # heal() boots it again


def _kill_etcd(lab: Lab, _f: Fault, hosts: list[str]) -> None:
    for host in hosts:  # the agent starts its member again
        faults.signal_component(lab, host, "etcd", signal.SIGKILL)


INJECT: dict[str, Injector] = {
    "kill-node": _each("kill-node"),
    "kill-keepalived": _each("kill-keepalived"),
    "kill-postgres": _each("kill-postgres"),
    "kill-manager": _each("kill-manager"),
    "link-down": _each("link-down"),
    "pause-node": _each("pause-node"),
    "partition-vrrp": _partition("vrrp"),
    "partition-replication": _partition("db"),
    "partition-both": _partition("vrrp", "db"),
    "partition-all": _partition("all"),
    "loss": _loss,
    "reboot": _reboot,
    "isolate": _isolate("all"),
    "partition-etcd": _isolate("etcd"),
    "kill-witness": _kill_witness,
    "kill-etcd": _kill_etcd,
}


def hosts_of(target: str, primary: str, standby: str) -> list[str]:
    return {"primary": [primary], "standby": [standby], "both": [primary, standby]}[target]


# --- writers -----------------------------------------------------------------------------------


class Writers:
    """Several writer streams through the VIP, and ``direct`` more that reach each node by its
    own address (moving to the other on a failure or a 503), for the whole run."""

    def __init__(self, lab: Lab, count: int, interval: float, tag: str, direct: int = 0) -> None:
        self.runs = [WriterRun(lab, f"nm{tag}-w{k}", interval=interval) for k in range(count)]
        node_urls = lab.status()["api"]["node_urls"]
        urls = tuple(node_urls[h] for h in NODES)  # Ack.via indexes NODES
        self.direct = [
            WriterRun(lab, f"nm{tag}-d{k}", interval=interval, urls=urls) for k in range(direct)
        ]
        self.runs += self.direct

    def start(self) -> Writers:
        for w in self.runs:
            w.start()
        return self

    def stop(self) -> None:
        for w in self.runs:
            w.stop()

    def last_ack(self) -> float:
        return max((w.acks[-1].t_ack for w in self.runs if w.acks), default=0.0)

    def first_ack_after(self, t: float) -> float | None:
        """The earliest acknowledgement after ``t`` (acks arrive in time order per writer)."""
        best: float | None = None
        for w in self.runs:
            found = None
            for a in reversed(w.acks):
                if a.t_ack <= t:
                    break
                found = a.t_ack
            if found is not None and (best is None or found < best):
                best = found
        return best

    def acked(self) -> int:
        return sum(len(w.acks) for w in self.runs)

    def exited(self) -> list[str]:
        """Writers whose process is gone: the bench, not the pair, is broken then."""
        return [w.prefix for w in self.runs if w.proc is None or w.proc.poll() is not None]

    def errors(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for w in self.runs:
            for key, count in dict(w.summary.get("errors") or {}).items():
                out[key] = out.get(key, 0) + int(count)
        return out


# --- what the agents reported --------------------------------------------------------------


def _agent_log(lab: Lab, host: str) -> Path:
    return lab.node_paths(host).log_dir / "esc_haagent.log"


def _log_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def read_new(path: Path, offset: int) -> tuple[list[str], int]:
    """Complete lines appended to ``path`` since ``offset``, and the new offset."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            if fh.tell() < offset:
                offset = 0  # the file was replaced
            fh.seek(offset)
            data = fh.read()
    except OSError:
        return [], offset
    end = data.rfind(b"\n") + 1  # a line still being written stays for next time
    return data[:end].decode(errors="replace").splitlines(), offset + end


def _history(lab: Lab, host: str) -> list[dict[str, Any]]:
    path = lab.node_paths(host).data_dir / "history.jsonl"
    items = []
    with contextlib.suppress(OSError):
        for line in path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                items.append(json.loads(line))
    return items


class Watch:
    """What the agents wrote since the last look: log lines, transitions, kept dumps."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.offsets = {h: _log_size(_agent_log(lab, h)) for h in NODES}
        self.seen = {h: dumps(lab, h) for h in NODES}
        self.since = time.time()

    def look(self) -> dict[str, Any]:
        lines: list[str] = []
        reasons: list[str] = []
        new_dumps: list[Path] = []
        for h in NODES:
            got, self.offsets[h] = read_new(_agent_log(self.lab, h), self.offsets[h])
            lines += [f"{h}: {line}" for line in got]
            reasons += [
                f"{h}: {i.get('reason')}" for i in history_since(_history(self.lab, h), self.since)
            ]
            now = dumps(self.lab, h)
            new_dumps += sorted(now - self.seen[h])
            self.seen[h] = now
        self.since = time.time()
        said = lines + reasons
        split = mentions(said, SPLIT_BRAIN)
        texts = [read_dump(p) for p in new_dumps]
        return {
            "split_brain": bool(split),
            "split_brain_said": split[:3],
            "vip_refused": bool(mentions(said, VIP_REFUSED)),
            "diverged_dumps": [str(p) for p in new_dumps],
            "diverged_rows": sum(dump_rows(t) for t in texts),
            "dump_texts": texts,
        }


# --- one step ----------------------------------------------------------------------------------


def _serving(st: dict[str, Any] | None) -> bool:
    return bool(st and st.get("state") == "MASTER" and (st.get("service") or {}).get("active"))


def hold(lab: Lab, step: FaultStep, writers: Writers, t_inj: float) -> dict[str, Any]:
    """Keep the fault in force: at least hold_s; for a fault writes survive, until they go on."""
    wait_writes = step.writes_go_on
    end_min = time.monotonic() + step.hold_s
    end_max = time.monotonic() + max(step.hold_s, EFFECT_TIMEOUT_S if wait_writes else 0.0)
    both_serving = False
    while True:
        sts = [agent_status(lab, h, timeout=0.3) for h in NODES]
        both_serving = both_serving or all(_serving(st) for st in sts)
        resumed = writers.first_ack_after(t_inj)
        now = time.monotonic()
        if now >= end_max or (now >= end_min and (resumed is not None or not wait_writes)):
            break
        time.sleep(0.1)
    return {
        "writes_resumed_s": None if resumed is None else round(resumed - t_inj, 3),
        "both_serving_seen": both_serving,
    }


def restore(lab: Lab, step: FaultStep, primary: str, standby: str) -> dict[str, Any]:
    """Heal the network and paused processes, then boot every node whose agent is gone. When
    both are down, the one named first boots alone for boot_gap_s: it must not serve then."""
    faults.heal(lab)
    order = [standby, primary] if step.boot_first == "standby" else [primary, standby]
    down = [h for h in order if not lab.agent_alive(h)]
    alone_served: bool | None = None
    for i, host in enumerate(down):
        if i == 1:
            alone_served = False
            end = time.monotonic() + step.boot_gap_s
            while time.monotonic() < end:
                alone_served = alone_served or lab.node_state(down[0]) == "MASTER"
                time.sleep(0.1)
        faults.reboot(lab, host)
    return {"booted": down, "alone_served": alone_served}


def escalate(lab: Lab, also: Callable[[], bool], timeout: float) -> tuple[PairHealth, list[str]]:
    """The pair did not become whole in time (already counted). Power-cycle what is not whole
    (a node that is not MASTER, then both) so the run can go on."""
    done: list[str] = []
    health = PairHealth(why_not="not tried")
    for level in ("not master", "both"):
        faults.heal(lab)
        if level == "both":
            victims = list(NODES)
        else:
            victims = [h for h in NODES if not _serving(agent_status(lab, h))]
            if len(victims) == len(NODES) or not victims:
                continue
        for host in victims:
            faults.reboot(lab, host)
        done.append(f"rebooted {', '.join(victims)}")
        health = wait_healthy(lab, timeout, also)
        if health.ok:
            break
    return health, done


def run_step(
    lab: Lab, step: FaultStep, writers: Writers, watch: Watch, recover_timeout: float
) -> dict[str, Any]:
    health = wait_healthy(lab, recover_timeout)
    rec: dict[str, Any] = {**step.to_json(), "t_start": time.time()}
    if not health.ok:
        rec.update(recovered=False, error=f"pair not whole before the step: {health.why_not}")
        return rec
    assert health.master is not None and health.backup is not None
    primary, standby = health.master, health.backup
    rec.update(primary=primary, standby=standby)
    t_inj = time.time()
    try:
        for i, f in enumerate(step.faults):
            if i == 1:
                if step.settle_first:
                    end = time.monotonic() + EFFECT_TIMEOUT_S
                    while writers.first_ack_after(t_inj) is None and time.monotonic() < end:
                        time.sleep(0.1)
                time.sleep(step.gap_s)  # the fixed delay between the two faults
            t_inj = time.time()
            INJECT[f.kind](lab, f, hosts_of(f.target, primary, standby))
        rec.update(hold(lab, step, writers, t_inj))
    except (EscError, OSError) as exc:
        rec["error"] = f"inject: {exc}"
    try:
        rec.update(restore(lab, step, primary, standby))
    except (EscError, OSError) as exc:
        rec["error"] = f"{rec.get('error', '')}; restore: {exc}".lstrip("; ")
    t_restored = time.time()

    def acked_after_restore() -> bool:
        return writers.last_ack() > t_restored

    health = wait_healthy(lab, recover_timeout, acked_after_restore)
    rec["recovered"] = health.ok
    rec["to_healthy_s"] = round(time.time() - t_restored, 3) if health.ok else None
    if not health.ok:
        rec["why_not"] = health.why_not
        health, rec["escalations"] = escalate(lab, acked_after_restore, recover_timeout)
        rec["whole_after_escalation"] = health.ok
    rec["master_after"] = health.master
    look = watch.look()
    rec["dump_texts"] = look.pop("dump_texts")
    rec.update(look)
    rec["step_s"] = round(time.time() - rec["t_start"], 3)
    return rec


# --- the run -----------------------------------------------------------------------------------


def final_check(
    lab: Lab,
    writers: Writers,
    master: str,
    backup: str | None,
    dump_texts: list[str],
    alone: AloneWindows,
) -> tuple[Tally, int, int]:
    """Every acknowledged write on the primary exactly once; how many the standby lacks; how
    many writes of the direct writers were lost as policy ``available`` allows (acknowledged
    by a node while it acknowledged alone, kept in its dump: not counted as lost)."""
    total = Tally(0, 0, 0, 0)
    standby_missing = allowed_n = 0
    for w in writers.runs:
        sql = f"SELECT name FROM tenants WHERE name LIKE '{w.prefix}-%'"
        present = tenant_numbers(lab.psql(master, sql, 120, check=True).stdout.split(), w.prefix)
        kept: set[int] = set()
        for text in dump_texts:
            kept |= dump_tenants(text, w.prefix)
        acked = [a.n for a in w.acks]
        t = tally(acked, present, kept, int(w.summary.get("duplicates", 0)))
        if any(w is d for d in writers.direct):
            by_node = [(a.n, a.t_ack, NODES[a.via]) for a in w.acks]
            lost = {n for n in acked if present[n] == 0}
            allowed, _ = allowed_losses(by_node, lost, kept, alone)
            allowed_n += len(allowed)
            t = Tally(t.acked, t.lost - len(allowed), t.lost_preserved - len(allowed), t.duplicated)
            acked = [n for n in acked if n not in allowed]
        total += t
        if backup is not None:
            missing: set[int] = set(acked)
            deadline = time.monotonic() + 30  # replay on the standby may trail its flush
            while missing and time.monotonic() < deadline:
                out = lab.psql(backup, sql, 120, check=False).stdout.split()
                missing = set(acked) - set(tenant_numbers(out, w.prefix))
                if missing:
                    time.sleep(0.5)
            standby_missing += len(missing)
    return total, standby_missing, allowed_n


def print_schedule(steps: list[FaultStep]) -> None:
    rows = [
        [
            str(s.n),
            s.label,
            f"{s.hold_s:g}",
            f"{s.gap_s:g}" + (" after effect" if s.settle_first else "") if s.gap_s else "-",
            f"{s.boot_first} first, {s.boot_gap_s:g} s alone" if s.boot_first else "-",
        ]
        for s in steps
    ]
    print(table(rows, ["step", "fault", "hold s", "gap s", "cold boot"]))


def kind_counts(steps: list[FaultStep]) -> dict[str, int]:
    out: dict[str, int] = {}
    for s in steps:
        out[s.kind] = out.get(s.kind, 0) + 1
    return dict(sorted(out.items()))


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--faults", type=int, default=200, help="steps in the schedule")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--writers", type=int, default=2, help="writer streams through the VIP")
    ap.add_argument(
        "--direct-writers",
        type=int,
        default=1,
        help="writer streams that reach each node by its own address",
    )
    ap.add_argument("--writer-interval", type=float, default=0.05, help="s between writes")
    ap.add_argument("--advert-int", type=float, default=0.2)
    ap.add_argument("--recover-timeout", type=float, default=180.0, help="per step, s")
    ap.add_argument(
        "--weights",
        default="",
        help="KIND=W,... over the defaults (kinds: " + ", ".join([*KINDS, DOUBLE]) + ")",
    )
    ap.add_argument("--log", type=Path, default=DEFAULT_LOG, help="one JSON line per step")
    ap.add_argument("--dry-run", action="store_true", help="print the schedule, touch nothing")
    ap.add_argument(
        "--max-minutes",
        type=float,
        default=None,
        help="stop injecting after this long, then heal and check as usual (default: no limit)",
    )
    ap.add_argument("--keep", action="store_true", help="leave the lab up at the end")
    ap.add_argument(
        "--quorum",
        choices=["none", "etcd"],
        default="none",
        help="etcd: the pair in quorum mode, with its faults (" + ", ".join(QUORUM_WEIGHTS) + ")",
    )
    args = ap.parse_args()
    try:
        weights = parse_weights(args.weights)
        if args.quorum == "etcd":
            weights = QUORUM_WEIGHTS | weights
        elif any(weights.get(k) for k in QUORUM_WEIGHTS):
            raise ValueError(f"--weights: {', '.join(QUORUM_WEIGHTS)} need --quorum etcd")
        steps = schedule(args.seed, args.faults, weights)
    except ValueError as exc:
        ap.error(str(exc))
    if args.writers < 1:
        ap.error("--writers: at least 1")
    if args.direct_writers < 0:
        ap.error("--direct-writers: 0 or more")
    if args.dry_run:
        print_schedule(steps)
        emit(
            "nemesis",
            {
                "dry_run": True,
                "seed": args.seed,
                "faults": len(steps),
                "kinds": kind_counts(steps),
                "holds_s": round(sum(s.hold_s + s.gap_s + s.boot_gap_s for s in steps), 1),
            },
        )
        return 0
    return run(args, steps)


def run(args: argparse.Namespace, steps: list[FaultStep]) -> int:
    args.log.parent.mkdir(parents=True, exist_ok=True)
    log: IO[str] = open(args.log, "w", buffering=1)  # noqa: SIM115 - closed in finally
    log.write(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}}) + "\n")
    log.write(json.dumps({"schedule": [s.to_json() for s in steps]}) + "\n")
    # SIGTERM ends the run like ^C: heal, check, report what was done.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    t_run = time.monotonic()
    records: list[dict[str, Any]] = []
    dump_texts: list[str] = []
    lab = fresh_pair(args.advert_int, quorum=args.quorum)
    tag = f"{args.seed}-{int(time.time())}"
    writers = Writers(lab, args.writers, args.writer_interval, tag, args.direct_writers)
    alone = AloneWatch(lab)
    interrupted = aborted = False
    try:
        alone.start()
        writers.start()
        watch = Watch(lab)
        for step in steps:
            if args.max_minutes is not None and time.monotonic() - t_run > args.max_minutes * 60:
                break
            try:
                rec = run_step(lab, step, writers, watch, args.recover_timeout)
            except KeyboardInterrupt:
                interrupted = True
                break
            dump_texts += rec.pop("dump_texts", [])
            records.append(rec)
            log.write(json.dumps(rec, sort_keys=True) + "\n")
            elapsed = time.monotonic() - t_run
            eta = elapsed / len(records) * (len(steps) - len(records))
            status = "ok" if rec.get("recovered") else f"NOT RECOVERED ({rec.get('why_not')})"
            print(
                f"[{step.n}/{len(steps)}] {step.label}: {status}, to healthy "
                f"{rec.get('to_healthy_s')} s, elapsed {elapsed:.0f} s, eta {eta:.0f} s",
                file=sys.stderr,
                flush=True,
            )
            if rec.get("recovered") is False and not rec.get("whole_after_escalation"):
                aborted = True  # the pair cannot be made whole: more faults would mean nothing
                break
            if writers.exited():
                raise RuntimeError(f"writer(s) {', '.join(writers.exited())} exited")
        # Heal everything, then the pair must be whole and serving again.
        faults.heal(lab)
        for host in NODES:
            if not lab.agent_alive(host):
                faults.reboot(lab, host)
        t_heal = time.time()
        health = wait_healthy(lab, args.recover_timeout, lambda: writers.last_ack() > t_heal)
        final_healthy_s = round(time.time() - t_heal, 3) if health.ok else None
        final_look = watch.look()
        dump_texts += final_look.pop("dump_texts")
        writers.stop()
        master = health.master or lab.master()
        if master is None:
            raise RuntimeError(f"no primary to check the writes on: {health.why_not}")
        result, standby_missing, allowed = final_check(
            lab, writers, master, health.backup, dump_texts, alone.stop()
        )
    finally:
        alone.stop()
        writers.stop()
        if not args.keep:
            lab.down()
    run_s = time.monotonic() - t_run
    per_kind = summarize(records)
    unrecovered = sum(r.unrecovered for r in per_kind.values())
    errors = sum(r.errors for r in per_kind.values())
    split = sum(r.split_brain for r in per_kind.values()) + int(final_look["split_brain"])
    diverged = sum(r.diverged_rows for r in per_kind.values()) + final_look["diverged_rows"]
    alone_served = sum(1 for r in records if r.get("alone_served"))
    healthy_all = [float(r["to_healthy_s"]) for r in records if r.get("to_healthy_s") is not None]
    figures: dict[str, Any] = {
        "seed": args.seed,
        "scheduled": len(steps),
        "faults": len(records),
        "interrupted": interrupted,
        "aborted": aborted,
        "writers": args.writers,
        "direct_writers": args.direct_writers,
        "advert_int": args.advert_int,
        "acked": result.acked,
        "lost": result.lost,
        "lost_kept_in_dumps": result.lost_preserved,
        "lost_as_available_allows": allowed,
        "duplicated": result.duplicated,
        "standby_missing": standby_missing,
        "split_brain_episodes": split,
        "diverged_rows_preserved": diverged,
        "unrecovered": unrecovered,
        "errors": errors,
        "alone_served": alone_served,
        "writer_errors": writers.errors(),
        "time_to_healthy_after_heal_s": final_healthy_s,
        "time_to_healthy_per_step": dist(healthy_all),
        "run_s": round(run_s, 1),
        "log": str(args.log),
        "kinds": {
            k: {
                "steps": r.steps,
                "unrecovered": r.unrecovered,
                "errors": r.errors,
                "split_brain": r.split_brain,
                "diverged_rows": r.diverged_rows,
                "to_healthy": dist(r.to_healthy),
                "writes_resumed": dist(r.writes_resumed),
            }
            for k, r in per_kind.items()
        },
    }
    log.write(json.dumps({"summary": figures}, sort_keys=True) + "\n")
    log.close()
    print(
        f"nemesis, seed {args.seed}: {len(records)} of {len(steps)} faults, {args.writers} "
        f"writers through the VIP and {args.direct_writers} to both nodes' addresses, "
        f"advert_int {args.advert_int:g} s, {run_s / 60:.1f} min"
    )
    print(
        table(
            [
                [
                    k,
                    str(r.steps),
                    str(r.unrecovered),
                    str(r.errors),
                    str(r.split_brain),
                    str(r.diverged_rows),
                    fmt(dist(r.writes_resumed)),
                    fmt(dist(r.to_healthy)),
                ]
                for k, r in per_kind.items()
            ],
            [
                "fault",
                "steps",
                "unrecovered",
                "errors",
                "split brain",
                "diverged rows",
                "writes resumed after (min/med/p95/max)",
                "to healthy after restore (min/med/p95/max)",
            ],
        )
    )
    print()
    print(
        table(
            [
                [
                    str(len(records)),
                    str(result.acked),
                    f"{result.lost} ({result.lost_preserved} kept in dumps)",
                    str(allowed),
                    str(result.duplicated),
                    str(split),
                    str(diverged),
                    "-" if final_healthy_s is None else f"{final_healthy_s:.2f} s",
                    str(unrecovered),
                ]
            ],
            [
                "faults",
                "acked",
                "lost",
                "lost as `available` allows",
                "duplicated",
                "split-brain episodes",
                "diverged rows preserved",
                "to healthy after heal",
                "unrecovered",
            ],
        )
    )
    emit("nemesis", figures)
    bad = result.lost or result.duplicated or unrecovered or errors or alone_served
    return 1 if bad or aborted or final_healthy_s is None else 0


if __name__ == "__main__":
    sys.exit(main())
