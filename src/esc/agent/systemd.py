"""The agent's side of systemd's notify protocol (``sd_notify(3)``), with the stdlib only.

Under ``esc-haagent.service`` (``Type=notify``) the agent tells systemd:

- ``READY=1`` once its first cycle has decided (the state file is written), so
  ``systemctl start`` returns with a state to show;
- ``STATUS=MASTER: serving as primary`` whenever the state or the reason changes, which is what
  ``systemctl status esc-haagent`` and ``service esc_service status`` print;
- ``WATCHDOG=1`` from the loop (``WatchdogSec=`` in the unit), so a hung agent is restarted;
- ``STOPPING=1`` when it stops on purpose.

Without ``NOTIFY_SOCKET`` (the lab, a shell, tests) every call is a no-op. Sending never raises
and never blocks: a lost status line must not stop a failover.

``from_env`` removes ``NOTIFY_SOCKET`` (and the watchdog variables) from the environment, as
``sd_notify(unset_environment=1)`` does: keepalived, ExaBGP, PostgreSQL and esc-manager are the
agent's children and would otherwise inherit them (Debian's keepalived speaks the protocol
itself, and systemd would log its messages as refused, ``NotifyAccess=main``).
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable, MutableMapping

ENV_VARS = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")
WATCHDOG_MIN_INTERVAL_S = 1.0  # at most one WATCHDOG=1 a second, however fast the loop runs


def socket_address(value: str) -> str | None:
    """``NOTIFY_SOCKET``'s value as an AF_UNIX address: an absolute path, or ``@name`` for an
    abstract socket (leading NUL). None for anything else (e.g. ``vsock:``): not supported."""
    if value.startswith("/"):
        return value
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]
    return None


def one_line(text: str) -> str:
    """A value fit for one ``KEY=value`` assignment (the protocol separates them by newlines)."""
    return " ".join(text.split())


class Notifier:
    """Sends notify messages to systemd; a no-op when ``address`` is None."""

    def __init__(
        self,
        address: str | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.address = address
        self.clock = clock
        self._sock: socket.socket | None = None
        # Reentrant: the agent's SIGTERM handler (STOPPING=1) may run while the main thread
        # is inside send().
        self._lock = threading.RLock()
        self._last_watchdog: float | None = None
        self._ready = False
        self._status: str | None = None

    @classmethod
    def from_env(cls, environ: MutableMapping[str, str] | None = None) -> Notifier:
        """The notifier for this process, the variables taken out of ``environ``
        (``os.environ`` by default) so that no child inherits them."""
        env = os.environ if environ is None else environ
        value = env.get("NOTIFY_SOCKET", "")
        for name in ENV_VARS:
            env.pop(name, None)
        return cls(socket_address(value) if value else None)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *assignments: str) -> bool:
        """One datagram of ``KEY=value`` lines; True if systemd's socket took it."""
        if self.address is None or not assignments:
            return False
        data = "\n".join(assignments).encode()
        with self._lock:
            try:
                if self._sock is None:
                    self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                    self._sock.setblocking(False)
                self._sock.sendto(data, self.address)
            except OSError:
                # systemd gone or its queue full: drop the message, the next one may pass.
                return False
        return True

    def ready(self, status: str | None = None) -> bool:
        """``READY=1`` (once), with a first ``STATUS=`` if given."""
        if self._ready:
            return self.status(status) if status is not None else False
        self._ready = True
        lines = ["READY=1"]
        if status is not None:
            self._status = one_line(status)
            lines.append(f"STATUS={self._status}")
        return self.send(*lines)

    def status(self, text: str) -> bool:
        """``STATUS=text``, sent only when it differs from the last one sent."""
        line = one_line(text)
        if line == self._status:
            return False
        self._status = line
        return self.send(f"STATUS={line}")

    def watchdog(self) -> bool:
        """``WATCHDOG=1``, at most once per ``WATCHDOG_MIN_INTERVAL_S``."""
        if self.address is None:
            return False
        now = self.clock()
        last = self._last_watchdog
        if last is not None and now - last < WATCHDOG_MIN_INTERVAL_S:
            return False
        self._last_watchdog = now
        return self.send("WATCHDOG=1")

    def stopping(self, status: str | None = None) -> bool:
        lines = ["STOPPING=1"]
        if status is not None:
            self._status = one_line(status)
            lines.append(f"STATUS={self._status}")
        return self.send(*lines)

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                with contextlib.suppress(OSError):
                    self._sock.close()
                self._sock = None


def state_line(state: str, reason: str) -> str:
    """The unit's status line: ``MASTER: serving as primary``."""
    return f"{state}: {reason}" if reason else state
