"""What the agent's monitoring listener answers (``esc.agent.monitor_http`` serves it): the
health endpoints load balancers and monitors poll, as Patroni's REST API has them, and the
Prometheus metrics. Pure: every answer is a function of the agent's status and what the
agent counted (:class:`Counts`); no I/O.

Health endpoints (``GET`` or ``HEAD``; 200 or 503, a JSON body either way):

    /primary     200 only on the node that serves: MASTER, primary database, escmanager
                 active (the same test as the peer view's ``serving``)
    /replica     200 on a standby that streams from the primary and is not outdated (the
                 primary has not dropped it from synchronous replication); ``?lag=N`` (bytes,
                 or with a unit: 16kB, 1MB, 1GB) also needs the replay lag known and <= N
    /health      200 while the agent runs its cycle and the database runs, in any state but
                 FAULT
    /liveness    200 while the agent's cycle runs (its last cycle ended within LIVE_S)
    /readiness   200 when the node does its job: it serves (as /primary) or it is an
                 in-sync standby (as /replica)

State and role codes (:data:`STATE_CODES`, :data:`ROLE_CODES`) never change meaning: a code is
added for a new state, never reused.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from esc.model import DbRole, NodeState
from esc.status_view import StatusView

# Never renumbered: dashboards and alert rules compare against these numbers.
STATE_CODES: Mapping[NodeState, int] = {
    NodeState.STOP: 0,
    NodeState.BACKUP: 1,
    NodeState.MASTER: 2,
    NodeState.SWITCHING: 3,
    NodeState.FAULT: 4,
}
ROLE_CODES: Mapping[DbRole, int] = {
    DbRole.ABSENT: 0,
    DbRole.STOPPED: 1,
    DbRole.STANDBY: 2,
    DbRole.PRIMARY: 3,
}

LIVE_S = 5.0  # a cycle takes cycle_s (0.2 s); a slow one a second or two: 5 s is stuck
HEALTH_PATHS = ("/primary", "/replica", "/health", "/liveness", "/readiness")

_LAG = re.compile(r"^(\d{1,15})\s*(B|kB|KB|MB|GB|TB)?$")
_UNITS = {None: 1, "B": 1, "kB": 1024, "KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}


class QueryError(ValueError):
    """A bad query parameter; the message names it."""


def parse_lag(text: str) -> int:
    """``?lag=``: bytes, or a number with a unit (kB, MB, GB, TB; 1024-based, as PostgreSQL)."""
    m = _LAG.fullmatch(text.strip())
    if m is None:
        raise QueryError(f"lag: {text[:20]!r} is not a size (bytes, or e.g. 16kB, 1MB, 1GB)")
    return int(m.group(1)) * _UNITS[m.group(2)]


@dataclass
class FailoverClock:
    """How long the last takeover took, as this node saw it: from the last moment it saw its
    peer serving to its own first cycle serving. A node that starts serving without having seen
    its peer serve (a cold start) records nothing. ``observe`` is called once a cycle with a
    monotonic ``now``; ``wall`` is the epoch time of the same moment."""

    peer_serving_at: float | None = None
    serving: bool = False
    last_duration: float | None = None
    last_at: float | None = None  # epoch seconds
    takeovers: int = 0

    def observe(
        self, now: float, wall: float, *, peer_serving: bool, self_serving: bool
    ) -> float | None:
        if peer_serving:
            self.peer_serving_at = now
        took = None
        if self_serving and not self.serving and self.peer_serving_at is not None:
            took = max(0.0, now - self.peer_serving_at)
            self.last_duration, self.last_at = took, wall
            self.takeovers += 1
            self.peer_serving_at = None
        self.serving = self_serving
        return took


@dataclass
class Counts:
    """What the agent counts between scrapes (its process's lifetime, as Prometheus counters)."""

    transitions: dict[tuple[str, str], int] = field(default_factory=dict)
    failover: FailoverClock = field(default_factory=FailoverClock)
    cycles: int = 0
    cycle_end: float | None = None  # monotonic
    started: float = field(default_factory=time.time)  # epoch seconds

    def transition(self, src: str, dst: str) -> None:
        self.transitions[(src, dst)] = self.transitions.get((src, dst), 0) + 1


# --- what the node is ---------------------------------------------------------------------


def serving(view: StatusView) -> bool:
    return view.state is NodeState.MASTER and view.db.role is DbRole.PRIMARY and view.service.active


def lag_bytes(view: StatusView) -> int | None:
    """Replication lag in bytes: on a standby, the primary's write position less this node's
    replay position; on a primary, its write position less the standby's replay position.
    None when not known (the peer silent, or not the other role)."""
    peer = view.peer
    if not peer.reachable or peer.db_role is None:
        return None
    if view.db.role is DbRole.STANDBY and peer.db_role is DbRole.PRIMARY:
        return max(0, peer.lsn - view.db.lsn)
    if view.db.role is DbRole.PRIMARY and peer.db_role is DbRole.STANDBY:
        return max(0, view.db.lsn - peer.lsn)
    return None


def in_sync_standby(view: StatusView) -> bool:
    return (
        view.db.role is DbRole.STANDBY
        and view.db.streaming
        and view.self_outdated_from is None
        and view.state is not NodeState.FAULT
    )


def cycle_age(counts: Counts, now: float) -> float:
    return math.inf if counts.cycle_end is None else max(0.0, now - counts.cycle_end)


# --- the health endpoints -----------------------------------------------------------------


def health(
    path: str, query: Mapping[str, str], view: StatusView | None, counts: Counts, now: float
) -> tuple[int, dict[str, Any]]:
    """(status, JSON body) of one health endpoint. ``now``: monotonic, as ``counts``."""
    age = cycle_age(counts, now)
    live = age <= LIVE_S
    if path == "/liveness":
        return (200 if live else 503), {"live": live, "cycle_age_s": _finite(age)}
    if view is None:
        return 503, {"error": "the agent has not completed its first cycle yet"}
    body: dict[str, Any] = {
        "node": view.node,
        "state": view.state.value,
        "role": view.db.role.value,
        "serving": serving(view),
        "timeline": view.db.timeline,
        "lag_bytes": lag_bytes(view),
        "cycle_age_s": _finite(age),
    }
    if path == "/primary":
        ok = live and serving(view)
    elif path == "/replica":
        ok = live and in_sync_standby(view)
        if "lag" in query:
            limit = parse_lag(query["lag"])
            lag = lag_bytes(view)
            body["lag_limit_bytes"] = limit
            ok = ok and lag is not None and lag <= limit
    elif path == "/health":
        ok = live and view.db.is_running and view.state is not NodeState.FAULT
    elif path == "/readiness":
        ok = live and (serving(view) or in_sync_standby(view))
    else:
        raise KeyError(path)
    return (200 if ok else 503), body


def _finite(value: float) -> float | None:
    return None if math.isinf(value) else round(value, 3)


# --- the metrics --------------------------------------------------------------------------


def _gauge(name: str, doc: str, value: float, labels: Mapping[str, str] | None = None) -> Metric:
    g = GaugeMetricFamily(name, doc, labels=list(labels) if labels else None)
    g.add_metric(list(labels.values()) if labels else [], value)
    return g


def metrics(view: StatusView | None, counts: Counts, now: float) -> Iterator[Metric]:
    """The agent's metric families for one scrape (docs/operations.md lists them)."""
    yield _gauge("esc_agent_up", "1: the agent answers (its first cycle done: esc_node_*)", 1)
    yield _gauge(
        "esc_agent_cycle_age_seconds",
        "Seconds since the agent's last cycle ended (+Inf before the first)",
        cycle_age(counts, now),
    )
    cycles = CounterMetricFamily("esc_agent_cycles", "Cycles the agent ran since it started")
    cycles.add_metric([], counts.cycles)
    yield cycles
    yield _gauge("esc_agent_start_time_seconds", "When the agent started (epoch)", counts.started)
    trans = CounterMetricFamily(
        "esc_transitions", "State transitions since the agent started", labels=["from", "to"]
    )
    for (src, dst), n in sorted(counts.transitions.items()):
        trans.add_metric([src, dst], n)
    yield trans
    fo = counts.failover
    took = CounterMetricFamily(
        "esc_takeovers", "Times this node began serving after seeing its peer serve"
    )
    took.add_metric([], fo.takeovers)
    yield took
    yield _gauge(
        "esc_last_takeover_duration_seconds",
        "The last takeover: from the last sight of the peer serving to this node serving "
        "(NaN: none since the agent started)",
        math.nan if fo.last_duration is None else fo.last_duration,
    )
    yield _gauge(
        "esc_last_takeover_time_seconds",
        "When the last takeover completed (epoch; 0: none)",
        fo.last_at or 0.0,
    )
    if view is None:
        return
    yield _gauge(
        "esc_node_info",
        "The node's name, peer and mode (value 1)",
        1,
        {"node": view.node, "peer": view.peer_name, "ha_mode": view.ha_mode or ""},
    )
    yield _gauge(
        "esc_node_state",
        "Node state: 0 STOP, 1 BACKUP, 2 MASTER, 3 SWITCHING, 4 FAULT",
        STATE_CODES[view.state],
    )
    yield _gauge(
        "esc_node_role",
        "Database role: 0 absent, 1 stopped, 2 standby, 3 primary",
        ROLE_CODES[view.db.role],
    )
    yield _gauge("esc_node_serving", "1: this node serves the northbound API", serving(view))
    yield _gauge(
        "esc_node_state_since_seconds", "When the node entered its state (epoch)", view.since
    )
    yield _gauge("esc_db_timeline", "The database's timeline", view.db.timeline)
    lag = lag_bytes(view)
    yield _gauge(
        "esc_replication_lag_bytes",
        "Replication lag in bytes (standby: primary's write - own replay; primary: own write "
        "- standby's replay); NaN when not known",
        math.nan if lag is None else lag,
    )
    yield _gauge(
        "esc_replication_lag_seconds",
        "Standby: seconds since the last replayed transaction (0 when idle); NaN on a primary",
        view.db.replay_lag_s if view.db.role is DbRole.STANDBY else math.nan,
    )
    yield _gauge(
        "esc_replication_streaming",
        "Standby: 1 while its WAL receiver streams; primary: standbys streaming from it",
        view.db.streaming if view.db.role is DbRole.STANDBY else len(view.db.streaming_to),
    )
    yield _gauge(
        "esc_sync_standby_present",
        "1: this node is a primary with a synchronous standby",
        view.db.role is DbRole.PRIMARY and view.db.sync_standby is not None,
    )
    yield _gauge(
        "esc_gate_open", "1: escmanager is active here (the northbound gate is open)",
        view.service.active,
    )  # fmt: skip
    yield _gauge("esc_service_healthy", "1: escmanager's health check passes", view.service.healthy)
    yield _gauge("esc_vip_held", "1: this node holds the virtual IP", view.vip_held)
    yield _gauge(
        "esc_anycast_announced",
        "1: the anycast route is announced and acknowledged (0 without [bgp])",
        view.announced,
    )
    yield _gauge("esc_peer_reachable", "1: the peer agent answers", view.peer.reachable)
    yield _gauge(
        "esc_peer_silent_seconds",
        "Seconds since the peer agent last answered",
        view.peer.silent_for,
    )
    yield _gauge("esc_degraded", "1: a primary acknowledging writes alone", view.degraded)
    yield _gauge(
        "esc_degraded_since_seconds",
        "When this primary began acknowledging alone (epoch; 0: not degraded)",
        view.degraded_since or 0.0,
    )
    yield _gauge(
        "esc_diverged_dumps",
        "Dumps kept of transactions this node had and its peer lacked (never deleted by us)",
        len(view.diverged_dumps),
    )
    yield _gauge("esc_switchover_in_progress", "1: a switchover is under way", view.switchover)
    yield _gauge("esc_forced_primary", "1: made primary by force-primary", view.forced)
    yield _gauge(
        "esc_paused", "1: maintenance mode (escadm ha pause): no automatic failover", view.paused
    )
    yield _gauge(
        "esc_switchover_scheduled_time_seconds",
        "When a scheduled switchover is due (epoch; 0: none scheduled)",
        view.switchover_at or 0.0,
    )
    if view.gateway_ok is not None:
        yield _gauge("esc_gateway_reachable", "1: the gateway answers", view.gateway_ok)
    q = view.quorum
    if q is not None:
        yield _gauge("esc_quorum_reachable", "1: the last etcd call answered", q.reachable)
        yield _gauge("esc_quorum_leader", "1: this node holds the leader key", q.holder)
        yield _gauge(
            "esc_quorum_serve_left_seconds",
            "Holder: seconds before it must have stopped serving (0: not the holder)",
            q.serve_left if q.holder else 0.0,
        )
        yield _gauge(
            "esc_quorum_takeover_in_seconds",
            "Not the holder: seconds until it may take the leader key (+Inf: not known)",
            0.0 if q.holder else q.takeover_in,
        )
