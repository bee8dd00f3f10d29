"""The nemesis bench's pure half: a seeded fault schedule, and the tallies over its results.

No I/O in this module (bench/nemesis.py injects, waits and reads; this decides and counts).
``schedule(seed, n)`` is deterministic for a seed, and its first k steps do not depend on ``n``,
so a failing step of a long run can be replayed with a short one (``--faults k``).

Targets name roles as they are at the start of a step: "primary" is the node that was serving
then, "standby" the other, "both" the pair. In a double fault the second fault still names the
step's roles: "kill the standby" after "kill the primary" kills the node that has just taken
over.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

Target = Literal["primary", "standby", "both"]


@dataclass(frozen=True)
class KindSpec:
    weight: float  # relative frequency as a single fault
    targets: tuple[tuple[Target, float], ...]  # where it may hit, with relative weights
    hold: tuple[float, float]  # seconds in force (uniform), at least


# The faults of the issue: kill -9 of the whole node, of keepalived alone, of PostgreSQL alone,
# link down on the sync network, SIGSTOP of the whole node, service crash; partitions (VRRP only,
# replication only, both, everything between the nodes); packet loss; restarts (a power cut and
# a boot). Names shared with esclab.scenarios where the fault is one of its scenarios.
KINDS: dict[str, KindSpec] = {
    # kill-node on "both" is the simultaneous double fault: a cold boot of the pair.
    "kill-node": KindSpec(14, (("primary", 6), ("standby", 2), ("both", 2)), (0.5, 2.5)),
    "kill-keepalived": KindSpec(7, (("primary", 1),), (0.5, 2.5)),
    "kill-postgres": KindSpec(7, (("primary", 3), ("standby", 1)), (0.5, 2.5)),
    "kill-manager": KindSpec(6, (("primary", 1),), (0.5, 2.5)),  # the service crashes
    "link-down": KindSpec(7, (("primary", 3), ("standby", 1)), (1.0, 3.0)),
    "pause-node": KindSpec(7, (("primary", 3), ("standby", 1)), (1.0, 3.0)),
    "partition-vrrp": KindSpec(5, (("both", 1),), (1.0, 3.0)),
    # Replication only: the primary's commits wait for the standby until the grace ends (the
    # hold lasts until writes go on, so at least the grace).
    "partition-replication": KindSpec(5, (("both", 1),), (1.0, 4.0)),
    # VRRP and replication cut, the agents' peer API still open.
    "partition-both": KindSpec(4, (("both", 1),), (1.0, 4.0)),
    # Everything between the two nodes: both serve (the split brain of a two-node pair). Some
    # holds outlast the standby-loss grace (5 s), after which the old primary writes alone.
    "partition-all": KindSpec(4, (("both", 1),), (1.0, 8.0)),
    "loss": KindSpec(5, (("primary", 2), ("standby", 1), ("both", 1)), (1.0, 3.0)),
    "reboot": KindSpec(7, (("primary", 3), ("standby", 2)), (0.0, 0.0)),
    # Quorum mode only (weight 0 otherwise; QUORUM_WEIGHTS with --quorum etcd): a node cut
    # from its peer and the witness, its etcd traffic alone cut, the witness killed, a node's
    # etcd member killed.
    "isolate": KindSpec(0, (("primary", 3), ("standby", 1)), (1.0, 6.0)),
    "partition-etcd": KindSpec(0, (("primary", 3), ("standby", 1)), (1.0, 5.0)),
    "kill-witness": KindSpec(0, (("both", 1),), (1.0, 5.0)),
    "kill-etcd": KindSpec(0, (("primary", 2), ("standby", 1)), (0.5, 2.5)),
}
QUORUM_WEIGHTS = {"isolate": 6.0, "partition-etcd": 4.0, "kill-witness": 3.0, "kill-etcd": 4.0}
DOUBLE = "double"
SEQUENTIAL = "double-sequential"  # summary row of the sequential kill
DOUBLE_WEIGHT = 10.0
LOSS_PCT = (5.0, 10.0, 20.0, 40.0)
# A double fault is either the sequential kill (the primary, then the node that took over) or a
# background fault left in force while a fault hits the primary.
SEQUENTIAL_SHARE = 0.35
BACKGROUND: tuple[tuple[str, Target], ...] = (
    ("partition-vrrp", "both"),
    ("partition-replication", "both"),
    ("loss", "both"),
    ("pause-node", "standby"),
    ("kill-postgres", "standby"),
    ("link-down", "standby"),
)
ON_PRIMARY: tuple[str, ...] = (
    "kill-node",
    "kill-keepalived",
    "kill-postgres",
    "kill-manager",
    "pause-node",
    "link-down",
    "reboot",
)


@dataclass(frozen=True)
class Fault:
    kind: str
    target: Target
    loss_pct: float = 0.0  # loss only

    @property
    def label(self) -> str:
        kind = f"loss {self.loss_pct:g}%" if self.kind == "loss" else self.kind
        between = self.kind.startswith("partition-") and self.kind != "partition-etcd"
        return kind if between or self.kind == "kill-witness" else f"{kind}@{self.target}"


@dataclass(frozen=True)
class FaultStep:
    n: int  # 1-based position in the schedule
    faults: tuple[Fault, ...]  # one, or two for a double fault (injected in this order)
    hold_s: float  # after the last injection, at least
    gap_s: float = 0.0  # double: between the two injections
    settle_first: bool = False  # double: wait for writes to go on after the first fault
    boot_first: Target | None = None  # both nodes down: which one boots first
    boot_gap_s: float = 0.0  # ...and how long it is alone before the other boots

    @property
    def label(self) -> str:
        return " + ".join(f.label for f in self.faults)

    @property
    def kind(self) -> str:
        """The row this step is counted under in the summary."""
        if len(self.faults) > 1:
            both_killed = all(f.kind == "kill-node" for f in self.faults)
            return SEQUENTIAL if both_killed else DOUBLE
        f = self.faults[0]
        return "kill-node@both" if f.kind == "kill-node" and f.target == "both" else f.kind

    @property
    def writes_go_on(self) -> bool:
        """The bench waits for writes through the VIP to resume while the fault is in force:
        after a fault on the primary (a failover, or the same node going on) or a partition
        (the standby-loss grace). Not after a double fault (an outdated standby must not take
        over a killed primary), and not after a fault on the standby alone, where it would
        only wait out the grace on every such step (partition-replication measures that)."""
        if len(self.faults) > 1:
            return False
        f = self.faults[0]
        return f.target != "standby" and not (f.kind == "kill-node" and f.target == "both")

    def to_json(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "label": self.label,
            "kind": self.kind,
            "faults": [
                {
                    "kind": f.kind,
                    "target": f.target,
                    **({"loss_pct": f.loss_pct} if f.loss_pct else {}),
                }
                for f in self.faults
            ],
            "hold_s": self.hold_s,
            "gap_s": self.gap_s,
            "settle_first": self.settle_first,
            "boot_first": self.boot_first,
            "boot_gap_s": self.boot_gap_s,
        }


def _pick(rng: random.Random, weighted: Sequence[tuple[Any, float]]) -> Any:
    return rng.choices([w[0] for w in weighted], weights=[w[1] for w in weighted])[0]


def _seconds(rng: random.Random, lo: float, hi: float) -> float:
    return round(rng.uniform(lo, hi), 1)


def _fault(rng: random.Random, kind: str, target: Target) -> Fault:
    return Fault(kind, target, rng.choice(LOSS_PCT) if kind == "loss" else 0.0)


def _single(rng: random.Random, n: int, kind: str) -> FaultStep:
    spec = KINDS[kind]
    target: Target = _pick(rng, spec.targets)
    fault = _fault(rng, kind, target)
    hold = _seconds(rng, *spec.hold)
    if kind == "kill-node" and target == "both":
        # Both down at once; either may boot first, the newer data must win whichever does.
        first: Target = rng.choice(("primary", "standby"))
        return FaultStep(n, (fault,), hold, boot_first=first, boot_gap_s=_seconds(rng, 0, 3))
    return FaultStep(n, (fault,), hold)


def _double(rng: random.Random, n: int) -> FaultStep:
    if rng.random() < SEQUENTIAL_SHARE:
        # The primary dies, the standby takes over and takes writes alone, then it dies too.
        # The stale node boots first: it must wait for its peer, not serve its older data.
        return FaultStep(
            n,
            (Fault("kill-node", "primary"), Fault("kill-node", "standby")),
            hold_s=_seconds(rng, 1, 2),
            gap_s=_seconds(rng, 0.5, 3),
            settle_first=True,
            boot_first="primary",
            boot_gap_s=_seconds(rng, 1, 3),
        )
    bg_kind, bg_target = rng.choice(BACKGROUND)
    first = _fault(rng, bg_kind, bg_target)
    second = Fault(rng.choice(ON_PRIMARY), "primary")
    hold = _seconds(rng, 1, 3)
    return FaultStep(
        n,
        (first, second),
        hold_s=hold,
        gap_s=_seconds(rng, 0.5, 3),
        # Half the time the second fault lands after the first has had its effect (e.g. the
        # primary has dropped its lost standby), half the time straight on top of it.
        settle_first=rng.random() < 0.5,
    )


def schedule(seed: int, n: int, weights: Mapping[str, float] | None = None) -> list[FaultStep]:
    """``n`` fault steps drawn with ``weights`` (per kind, plus ``double``; default: KINDS)."""
    if n < 0:
        raise ValueError(f"faults: {n} is negative")
    table = {k: s.weight for k, s in KINDS.items()} | {DOUBLE: DOUBLE_WEIGHT}
    if weights is not None:
        unknown = sorted(set(weights) - set(table))
        if unknown:
            raise ValueError(f"unknown fault kind(s): {', '.join(unknown)}")
        if any(w < 0 for w in weights.values()):
            raise ValueError("fault weights must not be negative")
        table |= dict(weights)
    if n and not any(table.values()):
        raise ValueError("every fault weight is zero")
    rng = random.Random(seed)
    kinds = list(table.items())
    steps: list[FaultStep] = []
    for i in range(1, n + 1):
        kind = _pick(rng, kinds)
        steps.append(_double(rng, i) if kind == DOUBLE else _single(rng, i, kind))
    return steps


def parse_weights(text: str) -> dict[str, float]:
    """``"kill-node=3,double=0"`` -> {"kill-node": 3.0, "double": 0.0}."""
    out: dict[str, float] = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"weights: {item!r} is not KIND=WEIGHT")
        try:
            out[name.strip()] = float(value)
        except ValueError as exc:
            raise ValueError(f"weights: {value!r} is not a number") from exc
    return out


# --- what the agents reported -------------------------------------------------------------------

SPLIT_BRAIN = "split brain"
VIP_REFUSED = "VRRP partition?"


def mentions(lines: Iterable[str], words: str) -> list[str]:
    return [line for line in lines if words in line]


def history_since(items: Iterable[Mapping[str, Any]], since: float) -> list[dict[str, Any]]:
    """History entries (agent history.jsonl) at or after ``since`` (wall-clock seconds)."""
    out = []
    for item in items:
        t = item.get("time")
        if isinstance(t, int | float) and t >= since:
            out.append(dict(item))
    return out


_ROW = re.compile(r"<row[\s>]")


def dump_rows(text: str) -> int:
    """Rows a diverged dump kept (the agent writes them as query_to_xml, one <row> each)."""
    return len(_ROW.findall(text))


def dump_tenants(text: str, prefix: str) -> set[int]:
    """Numbers of this writer's tenants found in a diverged dump."""
    pat = re.compile(r"<name>" + re.escape(prefix) + r"-(\d+)</name>")
    return {int(m) for m in pat.findall(text)}


def tenant_numbers(names: Iterable[str], prefix: str) -> Counter[int]:
    """``psql`` output lines ``<prefix>-<n>`` -> how many rows each n has."""
    out: Counter[int] = Counter()
    lead = prefix + "-"
    for line in names:
        name = line.strip()
        if name.startswith(lead) and name[len(lead) :].isdigit():
            out[int(name[len(lead) :])] += 1
    return out


@dataclass(frozen=True)
class Tally:
    acked: int
    lost: int  # acknowledged, not on the final primary
    lost_preserved: int  # ...of which found in a diverged dump (kept, not silently gone)
    duplicated: int  # a retry executed twice, or a row present more than once

    def __add__(self, other: Tally) -> Tally:
        return Tally(
            self.acked + other.acked,
            self.lost + other.lost,
            self.lost_preserved + other.lost_preserved,
            self.duplicated + other.duplicated,
        )


def tally(
    acked: Iterable[int], present: Counter[int], preserved: Iterable[int], retried_twice: int = 0
) -> Tally:
    """Every acknowledged write against what the primary holds (``present``: rows per number)."""
    ack = set(acked)
    missing = {n for n in ack if present[n] == 0}
    extra = sum(c - 1 for c in present.values() if c > 1)
    return Tally(len(ack), len(missing), len(missing & set(preserved)), retried_twice + extra)


# --- the summary ----------------------------------------------------------------------------------


@dataclass
class KindRow:
    steps: int = 0
    unrecovered: int = 0
    errors: int = 0
    split_brain: int = 0
    diverged_rows: int = 0
    to_healthy: list[float] = field(default_factory=list)
    writes_resumed: list[float] = field(default_factory=list)  # first ack after injection


def summarize(records: Iterable[Mapping[str, Any]]) -> dict[str, KindRow]:
    """Per-kind rows from the per-step records the bench logs (one dict per step)."""
    rows: dict[str, KindRow] = {}
    for r in records:
        row = rows.setdefault(str(r["kind"]), KindRow())
        row.steps += 1
        row.unrecovered += 0 if r.get("recovered") else 1
        row.errors += 1 if r.get("error") else 0
        row.split_brain += 1 if r.get("split_brain") else 0
        row.diverged_rows += int(r.get("diverged_rows") or 0)
        if r.get("recovered") and r.get("to_healthy_s") is not None:
            row.to_healthy.append(float(r["to_healthy_s"]))
        if r.get("writes_resumed_s") is not None:
            row.writes_resumed.append(float(r["writes_resumed_s"]))
    return dict(sorted(rows.items()))


# --- what `available` allows ------------------------------------------------------------------


@dataclass
class AloneWindows:
    """When each node acknowledged writes alone, from polls of its agent's status
    (``degraded_since``: the wall time of its outdated mark on the peer). A window is open from
    that time until the first poll that no longer sees it; one still open at the end never
    closed."""

    spans: dict[str, list[tuple[float, float | None]]] = field(default_factory=dict)

    def saw(self, node: str, t: float, degraded_since: float | None) -> None:
        spans = self.spans.setdefault(node, [])
        is_open = bool(spans) and spans[-1][1] is None
        if degraded_since is None:
            if is_open:
                spans[-1] = (spans[-1][0], t)
        elif not is_open or spans[-1][0] != degraded_since:
            if is_open:
                spans[-1] = (spans[-1][0], t)
            spans.append((degraded_since, None))

    def covers(self, node: str, t: float) -> bool:
        return any(s <= t and (u is None or t <= u) for s, u in self.spans.get(node, []))


def allowed_losses(
    acks: Iterable[tuple[int, float, str]],
    lost: Iterable[int],
    kept: Iterable[int],
    windows: AloneWindows,
) -> tuple[set[int], set[int]]:
    """Split the lost writes (acknowledged, not on the final primary) of a writer that reaches
    the nodes by their own addresses: (allowed, unexplained). Allowed is what policy
    ``available`` risks and reports: acknowledged (``(n, t_ack, node)``) by a node while it
    acknowledged alone, and kept in a diverged dump. Anything else is a lost write."""
    lost_set, kept_set = set(lost), set(kept)
    allowed = {
        n for n, t, node in acks if n in lost_set and n in kept_set and windows.covers(node, t)
    }
    return allowed, lost_set - allowed
