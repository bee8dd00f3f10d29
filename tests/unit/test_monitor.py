"""The agent's monitoring listener: its health answers and metrics (pure, esc.agent.monitor)
and the listener itself on loopback, over TLS (esc.agent.monitor_http)."""

from __future__ import annotations

import http.client
import json
import math
import ssl
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from statuses import UNREACHABLE, peer_of, status

from esc.agent import monitor
from esc.agent.monitor_http import ROUTES, certificate, endpoints, openapi, serve_monitor
from esc.model import DbRole, NodeState, QuorumObs
from esc.status_view import StatusView

NOW = 1000.0  # monotonic, as the counts


def live(**changes: Any) -> monitor.Counts:
    counts = monitor.Counts(cycle_end=NOW - 0.1)
    for k, v in changes.items():
        setattr(counts, k, v)
    return counts


PRIMARY = status()
STANDBY = status("esc-ha-1", "esc-ha-0", state="BACKUP", role="standby")


def answer(path: str, view: StatusView | None, counts: monitor.Counts | None = None, **q: str):
    return monitor.health(path, q, view, counts or live(), NOW)


# --- the health endpoints -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "primary", "standby"),
    [
        ("/primary", 200, 503),
        ("/replica", 503, 200),
        ("/health", 200, 200),
        ("/liveness", 200, 200),
        ("/readiness", 200, 200),
    ],
)
def test_each_endpoint_on_a_healthy_pair(path: str, primary: int, standby: int) -> None:
    assert answer(path, PRIMARY)[0] == primary
    assert answer(path, STANDBY)[0] == standby


def test_primary_is_200_only_while_serving() -> None:
    """MASTER with a primary database is not enough: the gate must be open too."""
    closed = replace(PRIMARY, service=replace(PRIMARY.service, active=False))
    assert answer("/primary", closed)[0] == 503
    switching = replace(PRIMARY, state=NodeState.SWITCHING)
    assert answer("/primary", switching)[0] == 503
    code, body = answer("/primary", PRIMARY)
    assert code == 200 and body["serving"] is True and body["role"] == "primary"


def test_replica_needs_streaming_and_not_outdated() -> None:
    assert answer("/replica", replace(STANDBY, db=replace(STANDBY.db, streaming=False)))[0] == 503
    assert answer("/replica", replace(STANDBY, self_outdated_from=0x3000000))[0] == 503
    assert answer("/replica", replace(STANDBY, state=NodeState.FAULT))[0] == 503


def test_replica_lag_threshold() -> None:
    behind = replace(STANDBY, peer=peer_of(False, STANDBY.db.lsn + 40_000))
    code, body = answer("/replica", behind, lag="1MB")
    assert code == 200 and body["lag_bytes"] == 40_000 and body["lag_limit_bytes"] == 1024**2
    assert answer("/replica", behind, lag="16kB")[0] == 503
    assert answer("/replica", behind, lag="40000")[0] == 200
    assert answer("/replica", behind, lag="39999")[0] == 503
    # the primary silent: the lag is not known, so no threshold is met
    assert answer("/replica", replace(STANDBY, peer=UNREACHABLE), lag="1GB")[0] == 503
    assert answer("/replica", replace(STANDBY, peer=UNREACHABLE))[0] == 200


@pytest.mark.parametrize("bad", ["", "-1", "1.5MB", "1 PB", "ten", "9" * 16])
def test_a_bad_lag_is_refused_naming_it(bad: str) -> None:
    with pytest.raises(monitor.QueryError, match=r"^lag: "):
        answer("/replica", STANDBY, lag=bad)


def test_a_stuck_cycle_fails_every_endpoint() -> None:
    stuck = monitor.Counts(cycle_end=NOW - monitor.LIVE_S - 0.5)
    for path in monitor.HEALTH_PATHS:
        assert answer(path, PRIMARY, stuck)[0] == 503, path


def test_before_the_first_cycle() -> None:
    never = monitor.Counts()
    assert answer("/liveness", None, never) == (503, {"live": False, "cycle_age_s": None})
    assert answer("/health", None, never)[0] == 503


def test_health_fails_in_fault_and_with_the_database_down() -> None:
    assert answer("/health", replace(PRIMARY, state=NodeState.FAULT))[0] == 503
    down = replace(STANDBY, db=replace(STANDBY.db, role=DbRole.STOPPED))
    assert answer("/health", down)[0] == 503
    assert answer("/readiness", down)[0] == 503


def test_lag_bytes_from_either_side() -> None:
    assert monitor.lag_bytes(PRIMARY) == 512  # the standby replayed to 512 bytes behind
    assert monitor.lag_bytes(STANDBY) == 0
    assert monitor.lag_bytes(replace(PRIMARY, peer=UNREACHABLE)) is None


# --- the takeover clock -------------------------------------------------------------------


def test_the_takeover_clock_measures_from_the_last_sight_of_the_peer_serving() -> None:
    clock = monitor.FailoverClock()
    assert clock.observe(10.0, 1e9, peer_serving=True, self_serving=False) is None
    assert clock.observe(10.2, 1e9, peer_serving=False, self_serving=False) is None
    took = clock.observe(11.05, 1e9 + 1, peer_serving=False, self_serving=True)
    assert took == pytest.approx(1.05)
    assert (clock.takeovers, clock.last_at) == (1, 1e9 + 1)
    # serving on: nothing more recorded
    assert clock.observe(11.3, 1e9 + 2, peer_serving=False, self_serving=True) is None


def test_a_cold_start_is_not_a_takeover() -> None:
    clock = monitor.FailoverClock()
    assert clock.observe(1.0, 1e9, peer_serving=False, self_serving=True) is None
    assert clock.takeovers == 0 and clock.last_duration is None


# --- the metrics --------------------------------------------------------------------------


def scrape(view: StatusView | None, counts: monitor.Counts) -> dict[str, float]:
    """Each sample's value by its name and labels, as Prometheus would read the text."""

    class One(Collector):
        def collect(self) -> Any:
            return monitor.metrics(view, counts, NOW)

    reg = CollectorRegistry(auto_describe=False)
    reg.register(One())
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(generate_latest(reg).decode()):
        for s in fam.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


def test_the_codes_never_change_meaning() -> None:
    """Dashboards compare against these numbers: changing one is a breaking change."""
    assert {s.value: c for s, c in monitor.STATE_CODES.items()} == {
        "STOP": 0, "BACKUP": 1, "MASTER": 2, "SWITCHING": 3, "FAULT": 4,
    }  # fmt: skip
    assert {r.value: c for r, c in monitor.ROLE_CODES.items()} == {
        "absent": 0, "stopped": 1, "standby": 2, "primary": 3,
    }  # fmt: skip
    assert set(monitor.STATE_CODES) == set(NodeState)
    assert set(monitor.ROLE_CODES) == set(DbRole)


def test_the_primary_s_metrics() -> None:
    counts = live(cycles=42)
    counts.transition("BACKUP", "SWITCHING")
    counts.transition("SWITCHING", "MASTER")
    counts.failover.observe(1.0, 1e9, peer_serving=True, self_serving=False)
    counts.failover.observe(1.8, 1e9 + 5, peer_serving=False, self_serving=True)
    m = scrape(PRIMARY, counts)
    assert m["esc_node_state"] == 2 and m["esc_node_role"] == 3
    assert m["esc_node_serving"] == 1 and m["esc_gate_open"] == 1
    assert m["esc_sync_standby_present"] == 1 and m["esc_vip_held"] == 1
    assert m["esc_replication_lag_bytes"] == 512
    assert math.isnan(m["esc_replication_lag_seconds"])
    assert m["esc_replication_streaming"] == 1  # one standby streams from it
    assert m["esc_agent_cycles_total"] == 42
    assert m["esc_transitions_total{from=BACKUP,to=SWITCHING}"] == 1
    assert m["esc_transitions_total{from=SWITCHING,to=MASTER}"] == 1
    assert m["esc_takeovers_total"] == 1
    assert m["esc_last_takeover_duration_seconds"] == pytest.approx(0.8)
    assert m["esc_last_takeover_time_seconds"] == 1e9 + 5
    assert m["esc_node_info{ha_mode=drbd,node=esc-ha-0,peer=esc-ha-1}"] == 1
    assert m["esc_degraded"] == 0 and m["esc_degraded_since_seconds"] == 0
    assert m["esc_peer_reachable"] == 1
    assert m["esc_paused"] == 0 and m["esc_switchover_scheduled_time_seconds"] == 0
    assert "esc_quorum_leader" not in m
    paused = scrape(replace(PRIMARY, paused=True, switchover_at=1.8e9), counts)
    assert paused["esc_paused"] == 1 and paused["esc_switchover_scheduled_time_seconds"] == 1.8e9


def test_the_standby_s_metrics() -> None:
    m = scrape(STANDBY, live())
    assert m["esc_node_state"] == 1 and m["esc_node_role"] == 2
    assert m["esc_node_serving"] == 0 and m["esc_sync_standby_present"] == 0
    assert m["esc_replication_lag_seconds"] == 1.25
    assert m["esc_replication_streaming"] == 1
    assert math.isnan(m["esc_last_takeover_duration_seconds"])


def test_a_degraded_primary_in_quorum_mode() -> None:
    view = replace(
        PRIMARY,
        peer=UNREACHABLE,
        peer_outdated_from=0x3000000,
        degraded_since=1.7e9,
        diverged_dumps=("/x/diverged-1", "/x/diverged-2"),
        quorum=QuorumObs(reachable=True, holder=True, leader="esc-ha-0", serve_left=1.25),
    )
    m = scrape(view, live())
    assert m["esc_degraded"] == 1 and m["esc_degraded_since_seconds"] == 1.7e9
    assert math.isnan(m["esc_replication_lag_bytes"])
    assert m["esc_peer_reachable"] == 0 and m["esc_peer_silent_seconds"] == 4.2
    assert m["esc_diverged_dumps"] == 2
    assert m["esc_quorum_leader"] == 1 and m["esc_quorum_serve_left_seconds"] == 1.25


def test_before_the_first_cycle_only_the_agent_s_own_figures() -> None:
    m = scrape(None, monitor.Counts())
    assert m["esc_agent_up"] == 1 and math.isinf(m["esc_agent_cycle_age_seconds"])
    assert not any(k.startswith("esc_node_") for k in m)


def test_every_metric_is_documented() -> None:
    """docs/operations.md lists every metric the agent exports, by name."""
    doc = (Path(__file__).parents[2] / "docs" / "operations.md").read_text()
    view = replace(PRIMARY, gateway_ok=True, quorum=QuorumObs(reachable=True, holder=False))
    names = {fam.name for fam in monitor.metrics(view, live(), NOW)}
    missing = sorted(n for n in names if f"`{n}" not in doc)
    assert not missing, f"not in docs/operations.md: {missing}"


# --- the listener -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A monitoring certificate of a node without a pair CA (cinder mode's)."""
    return certificate(tmp_path_factory.mktemp("pki"), "esc-ha-0", ["127.0.0.1"], pair_ca=False)


@pytest.fixture
def listener(tls: Any) -> Iterator[tuple[int, dict[str, Any]]]:
    """The listener on loopback; ``state["view"]`` is what it serves."""
    state: dict[str, Any] = {"view": PRIMARY, "counts": live()}

    def read() -> tuple[StatusView | None, monitor.Counts]:
        state["counts"].cycle_end = time.monotonic()
        return state["view"], state["counts"]

    srv = serve_monitor("127.0.0.1", 0, read, tls=tls, poll_interval=0.05)
    try:
        yield srv.server_address[1], state
    finally:
        srv.shutdown()
        srv.server_close()


def get(port: int, target: str, method: str = "GET", ca: Path | None = None) -> Any:
    ctx = ssl.create_default_context(cafile=str(ca) if ca else None)
    if ca is None:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=5)
    try:
        conn.request(method, target)
        resp = conn.getresponse()
        return resp.status, resp.getheader("Content-Type"), resp.read()
    finally:
        conn.close()


def test_the_listener_answers_over_tls_with_a_certificate_for_its_address(
    listener: tuple[int, dict[str, Any]], tls: Any
) -> None:
    port, state = listener
    ca = tls.cert.parent / "ca.crt"
    code, ctype, body = get(port, "/primary", ca=ca)  # verified: names 127.0.0.1
    assert code == 200 and ctype == "application/json"
    assert json.loads(body)["serving"] is True
    state["view"] = STANDBY
    assert get(port, "/primary")[0] == 503
    assert get(port, "/replica?lag=1MB")[0] == 200
    code, _, body = get(port, "/replica?lag=lots")
    assert code == 400 and json.loads(body)["error"].startswith("lag:")
    code, _, body = get(port, "/replica", method="HEAD")
    assert (code, body) == (200, b"")


def test_the_listener_serves_metrics_and_its_openapi(listener: tuple[int, dict[str, Any]]) -> None:
    port, _ = listener
    code, ctype, body = get(port, "/metrics")
    assert code == 200 and ctype.startswith("text/plain")
    names = {f.name for f in text_string_to_metric_families(body.decode())}
    assert {"esc_node_state", "esc_node_role", "process_cpu_seconds"} <= names
    code, _, body = get(port, "/openapi.json")
    doc = json.loads(body)
    assert code == 200 and set(doc["paths"]) == set(ROUTES)
    # every route the document lists is served (none 404s)
    for path in doc["paths"]:
        assert get(port, path)[0] != 404, path


def test_the_listener_only_reads(listener: tuple[int, dict[str, Any]]) -> None:
    port, _ = listener
    assert get(port, "/primary", method="POST")[0] == 405
    assert get(port, "/primary", method="DELETE")[0] == 405
    code, _, body = get(port, "/status")
    assert code == 404 and "/primary" in json.loads(body)["error"]


def test_the_openapi_document_lists_each_health_route_with_its_statuses() -> None:
    doc = openapi()
    for path in monitor.HEALTH_PATHS:
        assert set(doc["paths"][path]["get"]["responses"]) >= {"200", "503"}
    assert doc["paths"]["/replica"]["get"]["parameters"][0]["name"] == "lag"


def test_the_certificate_is_reissued_when_the_address_changes(tmp_path: Path) -> None:
    first = certificate(tmp_path, "n", ["192.0.2.10"], pair_ca=False)
    before = first.cert.read_bytes()
    assert certificate(tmp_path, "n", ["192.0.2.10"], pair_ca=False).cert.read_bytes() == before
    assert certificate(tmp_path, "n", ["192.0.2.20"], pair_ca=False).cert.read_bytes() != before
    pair = certificate(tmp_path, "n", ["192.0.2.10"], pair_ca=True)
    assert pair.cert == tmp_path / "host.crt"


def test_endpoints_name_the_node_s_own_address() -> None:
    e = endpoints("2001:db8::10", 8008)
    assert e.replica == "https://[2001:db8::10]:8008/replica"
    assert e.metrics == "https://[2001:db8::10]:8008/metrics"
    off = endpoints("192.0.2.10", 0)
    assert off.primary is None and off.metrics is None
