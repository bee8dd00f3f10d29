"""ExaBGP's API helper: ``python -m esc.drivers.exabgp_api SOCKET``, run by ExaBGP itself.

ExaBGP reads commands from this process's stdout, one per line, and (with ``api.ack``) answers
each on its stdin with ``done`` or ``error``; it also writes ``neighbor ... up/down`` events
there. The helper connects to the driver's unix socket ``SOCKET`` and bridges the two:

- each line from the driver goes to stdout as one line, flushed at once (the announce is on the
  failover path); a line that is not printable ASCII is refused, never forwarded, since a
  control character could end one command and start another;
- everything ExaBGP writes goes to the driver unchanged (the driver parses it).

It exits when either side closes: ExaBGP gone (stdin EOF: a SIGKILLed ExaBGP would otherwise
orphan its helper) or the driver gone (socket EOF). It imports nothing from esc and only the
standard library, so ExaBGP's first command is not held up by imports.
"""

from __future__ import annotations

import os
import select
import socket
import sys
import time

CONNECT_TIMEOUT_S = 5.0
MAX_LINE = 1024


def is_forwardable(line: bytes) -> bool:
    """A command line the helper may write to ExaBGP: 1..MAX_LINE printable ASCII bytes."""
    return 0 < len(line) <= MAX_LINE and all(0x20 <= b < 0x7F for b in line)


def split_lines(buf: bytes) -> tuple[list[bytes], bytes]:
    """Complete lines (without their newline) and the unfinished rest."""
    *lines, rest = buf.split(b"\n")
    return lines, rest


def _connect(path: str, timeout: float) -> socket.socket:
    deadline = time.monotonic() + timeout
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(path)
            return sock
        except OSError:
            sock.close()
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.02)


def _write_all(fd: int, data: bytes) -> None:
    while data:
        n = os.write(fd, data)
        data = data[n:]


def _say(text: str) -> None:
    # stderr is ExaBGP's, which the driver sends to exabgp.log.
    sys.stderr.write(f"esc exabgp_api[{os.getpid()}]: {text}\n")
    sys.stderr.flush()


def bridge(sock: socket.socket, stdin_fd: int = 0, stdout_fd: int = 1) -> str:
    """Run until one side closes; returns which one ("exabgp" or "driver")."""
    pending = b""
    sock_fd = sock.fileno()
    while True:
        ready, _, _ = select.select([stdin_fd, sock_fd], [], [])
        if stdin_fd in ready:
            data = os.read(stdin_fd, 65536)
            if not data:
                return "exabgp"
            sock.sendall(data)
        if sock_fd in ready:
            data = sock.recv(65536)
            if not data:
                return "driver"
            lines, pending = split_lines(pending + data)
            out = []
            for line in lines:
                if is_forwardable(line):
                    out.append(line + b"\n")
                else:
                    _say(f"refused a line that is not one printable command: {line[:80]!r}")
            if out:
                _write_all(stdout_fd, b"".join(out))
            if len(pending) > MAX_LINE:
                _say("refused an over-long line")
                pending = b""


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        _say("usage: python -m esc.drivers.exabgp_api SOCKET")
        return 2
    try:
        sock = _connect(args[0], CONNECT_TIMEOUT_S)
    except OSError as exc:
        _say(f"cannot connect to the driver at {args[0]}: {exc}")
        return 1
    try:
        closed = bridge(sock)
    except OSError as exc:
        _say(f"bridge failed: {exc}")
        return 1
    finally:
        sock.close()
    _say(f"{closed} closed its side; exiting")
    return 0


if __name__ == "__main__":
    sys.exit(main())
