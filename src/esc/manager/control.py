"""The agent's client for escmanager's control socket (HTTP over a unix socket, root only).

    POST /control/activate    {"primary": "<this node>"}
    POST /control/deactivate  {"primary": "<current primary>" | null, "primary_url": ... | null}
    GET  /control/status      -> {"active": bool, "healthy": bool, "detail": "..."}

Synchronous and stdlib-only, so the agent's loop can call it with a hard timeout. Every failure
(no socket, timeout, refusal, garbage) is a :class:`ServiceError`.
"""

from __future__ import annotations

import http.client
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from esc.errors import ServiceError
from esc.unixhttp import UnixHTTPConnection


@dataclass(frozen=True)
class ControlStatus:
    active: bool
    healthy: bool
    detail: str


class ManagerControl:
    def __init__(self, sock_path: Path, timeout: float) -> None:
        self.sock_path = sock_path
        self.timeout = timeout

    def activate(self, primary: str) -> None:
        self._call("POST", "/control/activate", {"primary": primary})

    def deactivate(self, primary: str | None, primary_url: str | None) -> None:
        self._call("POST", "/control/deactivate", {"primary": primary, "primary_url": primary_url})

    def status(self) -> ControlStatus:
        data = self._call("GET", "/control/status", None)
        try:
            return ControlStatus(
                active=bool(data["active"]),
                healthy=bool(data["healthy"]),
                detail=str(data["detail"]),
            )
        except (KeyError, TypeError) as exc:
            raise ServiceError(f"escmanager status: malformed answer {data!r}") from exc

    def _call(self, method: str, path: str, body: dict[str, Any] | None) -> Any:
        conn = UnixHTTPConnection(self.sock_path, self.timeout)
        payload = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        try:
            conn.request(method, path, body=payload, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            raise ServiceError(f"escmanager {path} via {self.sock_path}: {exc}") from exc
        finally:
            conn.close()
        try:
            data = json.loads(raw) if raw else {}
        except ValueError as exc:
            raise ServiceError(f"escmanager {path}: answer is not JSON ({resp.status})") from exc
        if resp.status != 200:
            text = raw[:200].decode("utf-8", "replace")
            detail = data.get("detail", text) if isinstance(data, dict) else text
            raise ServiceError(f"escmanager {path}: {resp.status} {detail}")
        return data
