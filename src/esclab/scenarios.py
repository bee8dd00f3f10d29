"""Named faults on the primary, shared by the fault tests and the benchmarks, and the health
check that says when the pair is whole again.

Each scenario injects one fault on ``host``; ``restore`` undoes whatever is left (heal, then
boot a node whose agent is gone) so the pair can form again. ``wait_healthy`` is stricter than
``Lab.wait_pair`` (MASTER + BACKUP state files): both agents answer, the primary serves and
holds the VIP, the standby streams and is named synchronous again, nobody is marked outdated.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from esc.agent.api import local_request
from esc.errors import DriverError
from esclab import faults
from esclab.lab import Lab
from esclab.topology import NODES

Inject = Callable[[Lab, str], object]

SCENARIOS: dict[str, Inject] = {
    # every process of the node at once, as a power cut (its kernel, here its namespace, stays)
    "kill-node": lambda lab, h: faults.signal_component(lab, h, "all", signal.SIGKILL),
    "kill-keepalived": lambda lab, h: faults.signal_component(lab, h, "keepalived", signal.SIGKILL),
    "kill-postgres": lambda lab, h: faults.signal_component(lab, h, "postgres", signal.SIGKILL),
    "kill-manager": lambda lab, h: faults.signal_component(lab, h, "manager", signal.SIGKILL),
    "link-down": lambda lab, h: faults.link(lab, h, lab.topology().sync_network, up=False),
    "pause-node": lambda lab, h: faults.signal_component(lab, h, "all", signal.SIGSTOP),
    # the primary's data filesystem (PostgreSQL's data directory and WAL) filled to the last block
    "diskfull": faults.diskfull,
    # Replication only (both directions of PostgreSQL's port between the nodes): not a failover.
    # VRRP and the agents still see each other, so the primary keeps the role; its commits wait
    # for the standby until the standby-loss grace ends, then (policy `available`) go on alone.
    "partition-replication": lambda lab, h: faults.partition(
        lab, lab.topology().sync_network, "db"
    ),
}
# Scenarios after which the same node stays primary: the write gap is the standby-loss grace.
NOT_FAILOVER = frozenset({"partition-replication"})


def restore(lab: Lab, host: str) -> None:
    faults.heal(lab)
    if not lab.agent_alive(host):
        faults.reboot(lab, host)


@dataclass(frozen=True)
class PairHealth:
    master: str | None = None
    backup: str | None = None
    why_not: str | None = None  # None: whole

    @property
    def ok(self) -> bool:
        return self.why_not is None and self.master is not None and self.backup is not None


def _quorum_checks(m: str, b: str, ms: Mapping[str, Any]) -> tuple[tuple[bool, str], ...]:
    """Quorum mode: the primary holds the leader key and etcd records the standby in sync (so
    it may take over)."""
    q = ms.get("quorum")
    if not isinstance(q, Mapping):
        return ()
    rec = q.get("sync") or {}
    return (
        (not q.get("holder"), f"{m}: not the leader key's holder"),
        (
            (rec.get("primary"), rec.get("sync")) != (m, b),
            f"{m}: etcd records {rec or 'nothing'}, not {b} in sync",
        ),
    )


def pair_verdict(statuses: Mapping[str, Mapping[str, Any] | None]) -> PairHealth:
    """Whether the pair is whole, from each node's agent status (None: the agent did not
    answer). Pure: the rules are unit-tested."""
    silent = sorted(h for h, st in statuses.items() if st is None)
    if silent:
        return PairHealth(why_not=f"no answer from the agent on {', '.join(silent)}")
    sts = {h: st for h, st in statuses.items() if st is not None}
    states = {h: str(st.get("state")) for h, st in sts.items()}
    masters = [h for h, s in states.items() if s == "MASTER"]
    backups = [h for h, s in states.items() if s == "BACKUP"]
    if len(masters) != 1 or len(backups) != 1:
        return PairHealth(why_not="states " + ", ".join(f"{h} {s}" for h, s in states.items()))
    m, b = masters[0], backups[0]
    ms, bs = sts[m], sts[b]
    mdb, bdb = ms.get("db") or {}, bs.get("db") or {}
    checks = (
        (mdb.get("role") != "primary", f"{m}: database {mdb.get('role')}"),
        (not (ms.get("service") or {}).get("active"), f"{m}: service inactive"),
        (not ms.get("vip_held"), f"{m}: VIP not held"),
        (bool(bs.get("vip_held")), f"{b}: holds the VIP too"),
        ((bs.get("service") or {}).get("active") is True, f"{b}: service active"),
        (bdb.get("role") != "standby", f"{b}: database {bdb.get('role')}"),
        (not bdb.get("streaming"), f"{b}: not streaming"),
        (mdb.get("sync_standby") != b, f"{m}: synchronous standby {mdb.get('sync_standby')}"),
        (ms.get("peer_outdated_from") is not None, f"{m}: {b} marked outdated"),
        (bs.get("self_outdated_from") is not None, f"{b}: outdated"),
        (bool(ms.get("switchover") or bs.get("switchover")), "switchover in progress"),
        *_quorum_checks(m, b, ms),
    )
    for failed, why in checks:
        if failed:
            return PairHealth(m, b, why)
    return PairHealth(m, b)


def agent_status(lab: Lab, host: str, timeout: float = 2.0) -> dict[str, Any] | None:
    """The node agent's status over its local socket (as escadm status reads it), or None."""
    sock = lab.node_paths(host).run_dir / "agent.sock"
    try:
        code, body = local_request(sock, "GET", "/status", timeout=timeout)
    except DriverError:
        return None
    return body if code == 200 else None


def brief(host: str, st: Mapping[str, Any] | None) -> str:
    """One line of a node's agent status for a test's failure message."""
    if st is None:
        return f"{host}: no answer"
    db = st.get("db") or {}
    return (
        f"{host}: {st.get('state')} [{st.get('rule')}] {st.get('reason')!r}; db {db.get('role')} "
        f"tl {db.get('timeline')} sync {db.get('sync_standby')!r} names {db.get('sync_names')!r}; "
        f"peer_outdated_from {st.get('peer_outdated_from')}"
    )


def pair_brief(lab: Lab) -> str:
    return " | ".join(brief(h, agent_status(lab, h)) for h in NODES)


def pair_health(lab: Lab) -> PairHealth:
    return pair_verdict({h: agent_status(lab, h) for h in NODES})


def wait_healthy(
    lab: Lab, timeout: float = 180.0, also: Callable[[], bool] | None = None
) -> PairHealth:
    """Poll until the pair is whole (and ``also`` holds); the last verdict either way."""
    deadline = time.monotonic() + timeout
    while True:
        health = pair_health(lab)
        if health.ok and also is not None and not also():
            health = PairHealth(health.master, health.backup, "no write acknowledged yet")
        if health.ok or time.monotonic() >= deadline:
            return health
        time.sleep(0.2)
