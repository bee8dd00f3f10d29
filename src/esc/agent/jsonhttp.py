"""The JSON-over-HTTP plumbing both agent APIs share (:mod:`esc.agent.local_api`,
:mod:`esc.agent.peer_api`): the request handler that checks a request's ``Content-Length``
before any body is read (400 when negative, not a number or missing on a ``POST``; 413 over
:data:`MAX_BODY`), asks its server to authorize the request and check the body, decodes the body
as a JSON object, calls the server's handler and writes the JSON answer with whatever headers
the server adds. Each server supplies those hooks (``authorize``, ``check_body``,
``answer_headers``, ``note_refusal``) and its bounds (``io_timeout``,
``one_request_per_connection``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import Any

from esc.agent.peerauth import AuthError, Headers

Handler = Callable[[str, str, dict[str, Any]], tuple[int, dict[str, Any]]]

MAX_BODY = 64 * 1024  # a request body or a peer's answer; ours are a few hundred bytes
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def body_length(method: str, headers: Headers) -> tuple[int, tuple[int, str] | None]:
    """The body's length from the headers alone, or the (status, error) to refuse it with."""
    if headers.get("Transfer-Encoding") is not None:
        return 0, (400, "Transfer-Encoding: not supported; send Content-Length")
    text = headers.get("Content-Length")
    if text is None:
        if method in _BODY_METHODS:
            return 0, (400, f"Content-Length: required on {method}")
        return 0, None
    text = text.strip()
    if not (text.isascii() and text.isdigit()):
        return 0, (400, f"Content-Length: {text[:20]!r} is not a non-negative integer")
    length = int(text)
    if length > MAX_BODY:
        return 0, (413, f"Content-Length: {length} bytes is over the {MAX_BODY}-byte limit")
    return length, None


class _JsonHandler(BaseHTTPRequestHandler):
    server: Any
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.io_timeout)  # every read and write

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _serve(self, method: str) -> None:
        length, refused = body_length(method, self.headers)
        if refused is not None:
            self._reply(*refused)  # the body is never read: the connection closes
            return
        try:
            auth = self.server.authorize(method, self.path, length, self.headers)
        except AuthError as exc:
            self.server.note_refusal(str(exc), self.client_address)
            self._reply(401, str(exc))
            return
        raw = self.rfile.read(length) if length else b""
        if len(raw) != length:  # the client went away mid-body
            self.close_connection = True
            return
        try:
            self.server.check_body(auth, raw)
        except AuthError as exc:
            self.server.note_refusal(str(exc), self.client_address)
            self._reply(401, str(exc))
            return
        body: Any = {}
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                self._reply(400, "body: not JSON", auth)
                return
            if not isinstance(body, dict):
                self._reply(400, "body: not a JSON object", auth)
                return
        try:
            status, payload = self.server.handle_api(method, self.path, body)
        except Exception as exc:
            status, payload = 500, {"error": f"{type(exc).__name__}: {exc}"}
        self._reply(status, payload, auth)

    def _reply(self, status: int, payload: dict[str, Any] | str, auth: Any = None) -> None:
        """Send a JSON answer (a str is an error message), signed when the request was
        authenticated. After an error the connection closes (an unread body stays unread)."""
        if isinstance(payload, str):
            payload = {"error": payload}
        data = json.dumps(payload).encode()
        close = status >= 400 or self.server.one_request_per_connection
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in self.server.answer_headers(auth, status, data).items():
            self.send_header(name, value)
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")
