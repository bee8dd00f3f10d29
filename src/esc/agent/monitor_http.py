"""The agent's monitoring listener: HTTPS on ``agent.monitor_bind``:``agent.monitor_port``
(default ``[::]:8008``, Patroni's port) serving, without authentication and for reading only,
the health endpoints of :mod:`esc.agent.monitor` (for load balancers and monitors), the
agent's Prometheus metrics (``/metrics``) and their OpenAPI document (``/openapi.json``).

Nothing here changes the node: ``GET`` and ``HEAD`` only, no body read, bounded like the peer
API (:mod:`esc.agent.bounded_http`). The certificate is the node's pair certificate
(``<etc>/pki/host.crt``, signed by the pair CA) where the node has one; in ``cinder`` mode,
which has no pair CA, the agent issues ``<etc>/pki/monitor/monitor.crt`` from a CA of its own
(``monitor/ca.crt``) at its first start. TLS 1.2 or newer (load balancers' health checks are
not all on 1.3); no client certificate is asked for.
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from prometheus_client import (
    CollectorRegistry,
    gc_collector,
    platform_collector,
    process_collector,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from esc import pki
from esc.addresses import url_host
from esc.agent import monitor
from esc.agent.bounded_http import BoundedServer, serve_in_thread
from esc.files import stamp
from esc.status_view import Endpoints, StatusView

log = logging.getLogger("esc.agent.monitor")

MONITOR_IO_TIMEOUT_S = 3.0
MONITOR_DEADLINE_S = 5.0
MONITOR_MAX_CONNECTIONS = 16  # a load balancer or two, Prometheus, an operator's curl

# path -> (summary, the statuses it answers): the dispatch table and the OpenAPI document.
ROUTES: dict[str, tuple[str, tuple[int, ...]]] = {
    "/primary": ("200 only on the node that serves the northbound API", (200, 503)),
    "/replica": (
        "200 on a streaming, in-sync standby; ?lag=N (bytes, or 16kB, 1MB, 1GB) also bounds "
        "its replay lag",
        (200, 400, 503),
    ),
    "/health": (
        "200 while the agent runs and the database runs, in any state but FAULT",
        (200, 503),
    ),
    "/liveness": ("200 while the agent's cycle runs", (200, 503)),
    "/readiness": ("200 when the node serves, or is an in-sync standby", (200, 503)),
    "/metrics": ("The agent's Prometheus metrics (text exposition format)", (200,)),
    "/openapi.json": ("This document", (200,)),
}


def openapi() -> dict[str, Any]:
    """The OpenAPI 3.1 document of the monitoring listener (built from :data:`ROUTES`)."""
    json_body = {"application/json": {"schema": {"type": "object"}}}
    paths: dict[str, Any] = {}
    for path, (summary, statuses) in ROUTES.items():
        responses: dict[str, Any] = {}
        for status in statuses:
            content = (
                {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}}
                if path == "/metrics"
                else json_body
            )
            text = {200: "OK", 400: "a bad query parameter, named", 503: "not so"}[status]
            responses[str(status)] = {"description": text, "content": content}
        op: dict[str, Any] = {"summary": summary, "responses": responses}
        if path == "/replica":
            op["parameters"] = [
                {
                    "name": "lag",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "string", "pattern": "^[0-9]+ *(B|kB|KB|MB|GB|TB)?$"},
                    "description": "the largest replay lag accepted (bytes, or with a unit)",
                }
            ]
        paths[path] = {"get": op, "head": {**op, "summary": f"{summary} (no body)"}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "esc-haagent monitoring", "version": "1"},
        "paths": paths,
    }


def endpoints(own_addr: str, monitor_port: int) -> Endpoints:
    """The URLs `escadm status --json` lists under ``endpoints``: this node's own address
    (``monitor_port`` 0: the listener is off, its URLs None)."""
    host = url_host(own_addr)
    base = f"https://{host}:{monitor_port}" if monitor_port else None
    return Endpoints(
        primary=f"{base}/primary" if base else None,
        replica=f"{base}/replica" if base else None,
        health=f"{base}/health" if base else None,
        liveness=f"{base}/liveness" if base else None,
        readiness=f"{base}/readiness" if base else None,
        metrics=f"{base}/metrics" if base else None,
    )


# --- TLS ----------------------------------------------------------------------------------


@dataclass
class ServerTls:
    """A server context from ``cert``/``key``, built again when either file changed."""

    cert: Path
    key: Path
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _made: tuple[tuple[int, ...] | None, ssl.SSLContext] | None = field(default=None, repr=False)

    def context(self) -> ssl.SSLContext:
        now = stamp(self.cert, self.key)
        with self._lock:
            if self._made is not None and now is not None and self._made[0] == now:
                return self._made[1]
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.cert, self.key)
        with self._lock:
            self._made = (now, ctx)
        return ctx


def certificate(pki_dir: Path, node: str, ips: Sequence[str], *, pair_ca: bool) -> ServerTls:
    """The listener's certificate: the pair's host certificate, or (no pair CA: cinder mode)
    one issued by a CA of this node's own in ``pki_dir/monitor``, reissued when its
    addresses change."""
    if pair_ca:
        return ServerTls(pki_dir / "host.crt", pki_dir / "host.key")
    own = pki_dir / "monitor"
    ca = pki.create_ca(own, f"{node} monitoring CA")
    cert = own / "monitor.crt"
    if not (pki.cert_matches(ca.cert, cert, ips, exact=True) and (own / "monitor.key").is_file()):
        pki.issue(ca, own, "monitor", ips)
        (own / "ca.srl").unlink(missing_ok=True)
    return ServerTls(cert, own / "monitor.key")


# --- the server ---------------------------------------------------------------------------


class _Scrape(Collector):
    def __init__(self, read: Callable[[], tuple[StatusView | None, monitor.Counts]]) -> None:
        self.read = read

    def collect(self) -> Any:
        view, counts = self.read()
        return monitor.metrics(view, counts, time.monotonic())


class _Handler(BaseHTTPRequestHandler):
    server: _MonitorServer
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.io_timeout)

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_GET(self) -> None:
        self._answer(head=False)

    def do_HEAD(self) -> None:
        self._answer(head=True)

    def _refuse(self) -> None:
        self._send(405, b'{"error": "this listener only reads: GET or HEAD"}', head=False)

    do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _refuse  # noqa: N815

    def _answer(self, *, head: bool) -> None:
        status, body, ctype = self.server.answer(self.path)
        self._send(status, body, head=head, ctype=ctype)

    def _send(self, status: int, body: bytes, *, head: bool, ctype: str = "") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype or "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")
        self.close_connection = True
        self.end_headers()
        if not head:
            self.wfile.write(body)


class _MonitorServer(BoundedServer):
    def __init__(
        self,
        addr: str,
        port: int,
        read: Callable[[], tuple[StatusView | None, monitor.Counts]],
        *,
        tls: ServerTls | None,
        max_connections: int = MONITOR_MAX_CONNECTIONS,
        io_timeout: float = MONITOR_IO_TIMEOUT_S,
        deadline_s: float = MONITOR_DEADLINE_S,
    ) -> None:
        self.read = read
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Scrape(read))
        # the process's own figures (CPU, memory, open files), as every exporter has them
        process_collector.ProcessCollector(registry=self.registry)
        platform_collector.PlatformCollector(registry=self.registry)
        gc_collector.GCCollector(registry=self.registry)
        super().__init__(
            addr,
            port,
            _Handler,
            log=log,
            label="monitoring listener",
            max_connections=max_connections,
            io_timeout=io_timeout,
            deadline_s=deadline_s,
            tls_context=tls.context if tls is not None else None,
        )

    def answer(self, target: str) -> tuple[int, bytes, str]:
        """(status, body, content type) for a GET of ``target`` (path and query)."""
        url = urlsplit(target)
        path = url.path.rstrip("/") or "/"
        if path == "/metrics":
            return 200, generate_latest(self.registry), CONTENT_TYPE_LATEST
        if path == "/openapi.json":
            return 200, _json(openapi()), ""
        if path not in monitor.HEALTH_PATHS:
            known = ", ".join(ROUTES)
            return 404, _json({"error": f"no {path[:60]}; this listener serves {known}"}), ""
        query = dict(parse_qsl(url.query, keep_blank_values=True))
        view, counts = self.read()
        try:
            status, body = monitor.health(path, query, view, counts, time.monotonic())
        except monitor.QueryError as exc:
            return 400, _json({"error": str(exc)}), ""
        return status, _json(body), ""


def _json(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def serve_monitor(
    addr: str,
    port: int,
    read: Callable[[], tuple[StatusView | None, monitor.Counts]],
    *,
    tls: ServerTls | None,
    poll_interval: float = 0.5,
    **bounds: Any,
) -> _MonitorServer:
    """The monitoring listener on ``addr``:``port`` (module docstring). ``read`` gives the
    agent's newest status (None before its first cycle) and its counts, per request."""
    srv = _MonitorServer(addr, port, read, tls=tls, **bounds)
    serve_in_thread(srv, "monitor", poll_interval)
    return srv
