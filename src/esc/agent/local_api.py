"""The agent's local API: HTTP over a unix socket (``<run>/agent.sock``, mode 0600: root only)
for escadm — status, history, switchover, force-primary — and its client,
:func:`local_request`. The socket's mode is its only authentication; requests are served from
daemon threads by the shared handler of :mod:`esc.agent.jsonhttp`, without a socket timeout
(escadm's requests may wait for the loop) and with keep-alive.
"""

from __future__ import annotations

import contextlib
import os
import socketserver
import threading
from pathlib import Path
from typing import Any

from esc.agent.jsonhttp import Handler, _JsonHandler
from esc.unixhttp import UnixHTTPConnection, request


class _UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    io_timeout: float | None = None  # root only; escadm's requests may wait for the loop
    one_request_per_connection = False

    def __init__(self, path: Path, handle: Handler, owner: tuple[int, int] | None = None) -> None:
        self.handle_api = handle
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        old = os.umask(0o177)
        try:
            super().__init__(str(path), _JsonHandler)
        finally:
            os.umask(old)
        if owner is not None:
            os.chown(path, *owner)

    def authorize(self, _method: str, _path: str, _length: int, _headers: Any) -> None:
        return None  # the socket is mode 0600: only root gets here

    def check_body(self, _auth: None, _raw: bytes) -> None:
        return None

    def answer_headers(self, _auth: None, _status: int, _data: bytes) -> dict[str, str]:
        return {}

    def note_refusal(self, _why: str, _addr: Any) -> None:
        return None

    def get_request(self) -> tuple[Any, Any]:
        conn, _ = self.socket.accept()
        return conn, ("local", 0)


def serve_unix(
    path: Path, handle: Handler, owner: tuple[int, int] | None = None
) -> socketserver.BaseServer:
    """Serve ``handle`` on ``path`` (0600, root's or ``owner``'s)."""
    srv = _UnixServer(path, handle, owner)
    threading.Thread(target=srv.serve_forever, name="local-api", daemon=True).start()
    return srv


READ_ONLY = (("GET", "/status"), ("GET", "/history"))


def read_only(handle: Handler) -> Handler:
    """``handle`` for reads only (:data:`READ_ONLY`): what the portal's socket serves to
    esc-manager's user. Anything else is 403 and never reaches the agent."""

    def serve(method: str, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if (method, path.split("?", 1)[0]) not in READ_ONLY:
            return 403, {"error": f"{method} {path.split('?', 1)[0]}: this socket only reads"}
        return handle(method, path, body)

    return serve


def local_request(
    sock: Path, method: str, path: str, body: dict[str, Any] | None = None, timeout: float = 10.0
) -> tuple[int, dict[str, Any]]:
    """Call the agent's local API (escadm's only way to the agent)."""
    return request(UnixHTTPConnection(sock, timeout), method, path, body)
