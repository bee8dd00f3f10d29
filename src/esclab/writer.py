"""The northbound orchestrator for tests and benchmarks: writes through the VIP, retries with
the same transaction id, and reports every acknowledgement with its time.

    python -m esclab.writer --url https://192.0.2.100:8443/v0 --user admin --password-stdin \\
        --prefix run1 --interval 0.02 --duration 30

Runs inside the ``nb`` host. Each write creates tenant ``<prefix>-<n>`` with transaction id
``<prefix>-<n>``; a write is retried (same id) until acknowledged (202). Prints one JSON line
per acknowledgement ({"n", "t_sent", "t_ack", "attempts", "via"}) and a final summary line.
SIGTERM stops it after the write in flight.

``--url`` given more than once is a client that reaches every node by its own address, as an
orchestrator configured with both would: it stays on one URL while it answers and moves to the
next on a failure or an answer other than 202 (an inactive node's 503). ``via`` is the index of
the URL that acknowledged.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import signal
import ssl
import sys
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit


@dataclass
class Stats:
    acked: int = 0
    attempts: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0  # a retry answered "already exists": executed twice (must stay 0)


class Client:
    def __init__(self, url: str, user: str, password: str, timeout: float) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        # The lab's nodes have self-signed certificates (each its own): the test client checks
        # what it writes, not who answers.
        self.tls: ssl.SSLContext | None = None
        if parts.scheme == "https":
            self.tls = ssl.create_default_context()
            self.tls.check_hostname = False
            self.tls.verify_mode = ssl.CERT_NONE
        self.base = parts.path.rstrip("/")
        self.timeout = timeout
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        self.auth = f"Basic {token}"
        self.conn: http.client.HTTPConnection | None = None

    def request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, Any]]:
        if self.conn is None:
            self.conn = (
                http.client.HTTPSConnection(
                    self.host, self.port, timeout=self.timeout, context=self.tls
                )
                if self.tls is not None
                else http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            )
        data = json.dumps(body).encode() if body is not None else None
        hdrs = {"Authorization": self.auth, "Content-Type": "application/json", **(headers or {})}
        try:
            self.conn.request(method, self.base + path, body=data, headers=hdrs)
            resp = self.conn.getresponse()
            raw = resp.read()
        except (OSError, http.client.HTTPException):
            self.close()  # a new connection next time: the VIP may have moved
            raise
        try:
            payload = json.loads(raw) if raw else {}
        except ValueError:
            payload = {}
        return resp.status, payload

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


class Clients:
    """One client per URL; the current one until it fails, then the next."""

    def __init__(self, clients: list[Client]) -> None:
        self.clients = clients
        self.current = 0

    def request(self, *args: Any) -> tuple[int, dict[str, Any]]:
        return self.clients[self.current].request(*args)

    def failed(self) -> None:
        self.current = (self.current + 1) % len(self.clients)


def write_one(
    clients: Clients, prefix: str, n: int, stop: list[bool], stats: Stats, retry_pause: float
) -> tuple[int, float]:
    """Write tenant n until acknowledged; return the attempts it took (0: stopped first) and
    when the acknowledged attempt was sent (wall clock). The URL that acknowledged is
    ``clients.current`` then."""
    tid = f"{prefix}-{n}"
    attempts = 0
    while not stop[0] or attempts == 0:
        attempts += 1
        stats.attempts += 1
        sent = time.time()
        try:
            status, body = clients.request(
                "POST", "/tenants", {"name": tid}, {"ESC-Transaction-Id": tid}
            )
        except (OSError, http.client.HTTPException) as exc:
            key = type(exc).__name__
            stats.errors[key] = stats.errors.get(key, 0) + 1
            clients.failed()
            time.sleep(retry_pause)
            continue
        if status == 202:
            return attempts, sent
        if status == 409 and "exist" in json.dumps(body):
            stats.duplicates += 1
            return attempts, sent
        stats.errors[str(status)] = stats.errors.get(str(status), 0) + 1
        clients.failed()
        time.sleep(retry_pause)
    return 0, 0.0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="esc-writer", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--url", required=True, action="append", help="once per node, or the VIP's")
    ap.add_argument("--user", required=True)
    ap.add_argument("--password-stdin", action="store_true", required=True)
    ap.add_argument("--prefix", required=True)
    ap.add_argument("--interval", type=float, default=0.02)
    ap.add_argument("--duration", type=float, default=3600.0)
    ap.add_argument("--timeout", type=float, default=1.0, help="per request")
    args = ap.parse_args(argv)
    password = sys.stdin.readline().rstrip("\n")
    clients = Clients([Client(url, args.user, password, args.timeout) for url in args.url])
    stop = [False]

    def _stop(_sig: int, _frm: object) -> None:
        stop[0] = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    stats = Stats()
    end = time.monotonic() + args.duration
    n = 0
    print(json.dumps({"ready": True, "t": time.time()}), flush=True)
    while not stop[0] and time.monotonic() < end:
        n += 1
        t0 = time.monotonic()
        attempts, sent = write_one(
            clients, args.prefix, n, stop, stats, retry_pause=args.interval / 2
        )
        if attempts:
            stats.acked += 1
            ack = {
                "n": n,
                "t_sent": sent,
                "t_ack": time.time(),
                "attempts": attempts,
                "via": clients.current,
            }
            print(json.dumps(ack), flush=True)
        time.sleep(max(0.0, args.interval - (time.monotonic() - t0)))
    print(
        json.dumps(
            {
                "summary": {
                    "acked": stats.acked,
                    "attempts": stats.attempts,
                    "duplicates": stats.duplicates,
                    "errors": stats.errors,
                }
            }
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
