"""HTTP with JSON bodies, over TCP or a unix socket (the agent's local and peer APIs, the
manager's control socket). Transport errors leave as :class:`DriverError`."""

from __future__ import annotations

import http.client
import json
import socket
from pathlib import Path
from typing import Any

from esc.errors import DriverError


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: Path | str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = str(path)

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.unix_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def request(
    conn: http.client.HTTPConnection,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any]]:
    """Send one JSON request on ``conn`` (closed after); (status, JSON object answer)."""
    data = json.dumps(body).encode() if body is not None else None
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    try:
        conn.request(method, path, body=data, headers=hdrs)
        resp = conn.getresponse()
        raw = resp.read()
    except (OSError, http.client.HTTPException) as exc:
        raise DriverError(f"{method} {path}: {exc}") from exc
    finally:
        conn.close()
    try:
        payload = json.loads(raw) if raw else {}
    except ValueError as exc:
        raise DriverError(f"{method} {path}: answer is not JSON ({resp.status})") from exc
    if not isinstance(payload, dict):
        raise DriverError(f"{method} {path}: answer is not a JSON object ({resp.status})")
    return resp.status, payload
