"""The agent's client for escmanager's control socket (HTTP over a unix socket, root only).

    POST /control/activate    {"primary": "<this node>", "until": <time.monotonic()> | null}
    POST /control/lease       {"until": <time.monotonic()> | null}  (quorum mode, every cycle)
    POST /control/deactivate  {"primary": "<current primary>" | null, "primary_url": ... | null}
    GET  /control/status      -> {"active": bool, "healthy": bool, "detail": "..."}

Synchronous and stdlib-only, so the agent's loop can call it with a hard timeout. Every failure
(no socket, timeout, refusal, garbage) is a :class:`ServiceError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from esc.errors import DriverError, ServiceError
from esc.unixhttp import UnixHTTPConnection, request


@dataclass(frozen=True)
class ControlStatus:
    active: bool
    healthy: bool
    detail: str


class ManagerControl:
    def __init__(self, sock_path: Path, timeout: float) -> None:
        self.sock_path = sock_path
        self.timeout = timeout

    def activate(self, primary: str, until: float | None = None) -> None:
        """``until``: serve no later than this (this host's time.monotonic) unless renewed
        (sent only when given: two-node mode's body is unchanged)."""
        body: dict[str, Any] = {"primary": primary}
        if until is not None:
            body["until"] = until
        self._call("POST", "/control/activate", body)

    def lease(self, until: float | None) -> bool:
        """Renew (or cut, with an instant already past) the lease: whether it now serves."""
        data = self._call("POST", "/control/lease", {"until": until})
        return bool(data.get("serving")) if isinstance(data, dict) else False

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
        try:
            status, data = request(
                UnixHTTPConnection(self.sock_path, self.timeout), method, path, body
            )
        except DriverError as exc:
            raise ServiceError(f"escmanager via {self.sock_path}: {exc}") from exc
        if status != 200:
            raise ServiceError(f"escmanager {path}: {status} {data.get('detail', '')}")
        return data
