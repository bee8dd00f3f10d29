"""A fault schedule: what happens to the pair, when, and for how long. Plain data, so a failing
schedule prints as JSON and replays exactly (``SIM_REPLAY``, tests/sim/test_replay.py).

Faults (``node`` 0 is esc-ha-0, the first of ha_node_list, VRRP priority 101):

- ``partition``: ``what`` the traffic kinds cut (``vrrp,repl,api``), ``direction`` ``both``,
  ``a>b`` (esc-ha-0 to esc-ha-1 only) or ``b>a``; healed after ``duration``;
- ``kill``: ``what`` one of ``agent``, ``keepalived``, ``postgres``, ``manager`` (SIGKILL); a
  killed agent is started again after ``duration`` (systemd's RestartSec, or an operator);
  the others are the agent's to restart;
- ``pause``: ``what`` one of those or ``node`` (SIGSTOP), resumed after ``duration``;
- ``reboot``: a power cut, the node boots again after ``duration``;
- ``switchover``: ``escadm ha switchover`` on the node that is MASTER then (``node`` -1) or
  on ``node``.

Steps start ``gap`` seconds after the previous step started (0: at the same moment, a double
fault). After the last one ends, everything is healed and the pair must converge.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Fault:
    kind: str
    node: int = 0
    what: str = ""
    direction: str = "both"
    duration: float = 0.0

    def __str__(self) -> str:
        who = f"esc-ha-{self.node}" if self.node >= 0 else "the MASTER"
        if self.kind == "partition":
            return f"partition {self.what} {self.direction} for {self.duration:.1f}s"
        if self.kind == "switchover":
            return f"switchover on {who}"
        if self.kind == "reboot":
            return f"reboot {who} (down {self.duration:.1f}s)"
        return f"{self.kind} {self.what} on {who} for {self.duration:.1f}s"


@dataclass(frozen=True)
class Step:
    gap: float
    fault: Fault


@dataclass(frozen=True)
class Schedule:
    seed: int
    steps: tuple[Step, ...]
    policy: str = "available"
    systemd: bool = False
    write_interval: float = 0.1
    first_boot: bool = False  # boot from empty data directories (else: the warm start)

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Schedule:
        data = json.loads(text)
        steps = tuple(Step(s["gap"], Fault(**s["fault"])) for s in data.pop("steps"))
        return cls(steps=steps, **data)

    def describe(self) -> str:
        lines = [
            f"seed {self.seed}, policy {self.policy}, "
            f"{'systemd' if self.systemd else 'lab'} process tree, a write every "
            f"{self.write_interval:.2f}s, "
            f"{'first boot' if self.first_boot else 'warm start'}"
        ]
        lines += [f"  +{s.gap:.1f}s {s.fault}" for s in self.steps]
        return "\n".join(lines)
