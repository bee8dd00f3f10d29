"""ExaBGP on this node: the anycast route's announcer, supervised by the agent.

ExaBGP runs on both nodes with its session to the router up; only the MASTER announces the
anycast host route. It is the agent's child under ``setpriv --pdeathsig KILL``: if the agent dies
(kill -9 included) ExaBGP dies with it, the kernel closes the BGP session and the router drops
the route within milliseconds. A node without a live agent must not attract traffic.

The driver speaks ExaBGP's process API through our helper (``exabgp_api.py``): ExaBGP starts it,
the helper connects to the driver's unix socket, and the driver writes one command per line;
ExaBGP answers each with ``done`` or ``error``, in command order.

Rules:
- Commands come only from ``exabgp_conf`` (rendered once from the validated config); answers
  are parsed there too.
- The agent's cycle is never held up: ``tick()`` never waits, ``set_announced()`` waits for its
  answer at most ``ack_timeout_s`` (0.15 s).
- Delivery problems (helper not connected yet, no answer, ``error``) do not raise: the caller is
  on the failover path and the actions after it must still run. They are logged, shown by
  ``status()`` and retried by ``tick()``. ``start()`` raises ``BgpError`` or ``ConfigError``.
- A command ExaBGP leaves unanswered for ``hang_s`` means ExaBGP is hung (SIGSTOP, stuck): it is
  killed, so the session drops and the router withdraws at once instead of at the hold timer,
  and ``tick()`` starts it again.
- Call ``start``, ``tick`` and ``set_announced`` from the agent's main thread: PDEATHSIG fires
  when the *thread* that forked exits. ``status()`` may be called from any thread.

The pure parts (``due_command``, ``is_hung``, ``restart_delay``) take ``now`` and do no I/O.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import select
import shutil
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from esc.accounts import EXABGP_USER, Account, lookup, setpriv_drop
from esc.config.schema import EscConfig, NodePaths, write_atomic
from esc.drivers.base import BgpStatus
from esc.drivers.exabgp_conf import (
    HELPER_MODULE,
    Answer,
    NeighborEvent,
    announce_command,
    exabgp_env,
    parse_answer,
    render_exabgp,
    withdraw_command,
)
from esc.errors import BgpError, ConfigError
from esc.files import open_append

log = logging.getLogger("esc.exabgp")

Kind = Literal["announce", "withdraw"]

# SIGKILL, not proc.py's SIGTERM: a killed ExaBGP cannot linger in its shutdown path, and the
# kernel closing its socket is what tells the router to drop the route.
DIE_WITH_PARENT_KILL = ["setpriv", "--pdeathsig", "KILL", "--"]
# ExaBGP runs unprivileged: it only connects out (no port 179), and TCP MD5 needs no privilege.
# Debian's exabgp package makes this system user. None: as the agent's own user (tests).
RUN_AS = EXABGP_USER
ACK_TIMEOUT_S = 0.15
HANG_S = 2.0
RETRY_S = 1.0
STABLE_S = 30.0  # a death after running this long is not counted as a crash loop
RESTART_MAX_S = 30.0
SOCKET_PATH_MAX = 107  # sun_path is 108 bytes, NUL included


def conf_path(paths: NodePaths) -> Path:
    """Generated from esc.toml at every start, like keepalived.conf: it lives in <run>."""
    return paths.run_dir / "exabgp.conf"


def _account(name: str | None) -> Account | None:
    if name is None:
        return None
    try:
        return lookup(name, "bgp")
    except ConfigError as exc:
        raise BgpError(
            f"cannot run ExaBGP as {name!r}: {exc.message} (apt-get install exabgp)"
        ) from None


def unsearchable_parent(path: Path, uid: int) -> Path | None:
    """The first directory above ``path`` that user ``uid`` (not in its group) cannot enter;
    the first missing one ends the walk (the driver makes it, with the usual 0755)."""
    for d in [*reversed(path.parents)]:
        try:
            st = d.stat()
        except FileNotFoundError:
            return None
        if not (st.st_mode & 0o001 or (st.st_uid == uid and st.st_mode & 0o100)):
            return d
    return None


def socket_path(paths: NodePaths) -> Path:
    return paths.run_dir / "exabgp-api.sock"


def log_path(paths: NodePaths) -> Path:
    return paths.log_dir / "exabgp.log"


# --- pure decisions ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Sent:
    """One command written to ExaBGP; ``ok`` is None until its answer arrives."""

    seq: int
    kind: Kind
    at: float
    ok: bool | None = None


def due_command(
    want: bool, last: Sent | None, now: float, reannounce_s: float, retry_s: float = RETRY_S
) -> Kind | None:
    """The command to send now, if any.

    - the desired state changed (or nothing was sent on this connection): send it at once;
    - the last command is unanswered: wait for its answer (a hang is ``is_hung``'s business);
    - it was answered ``error``: send it again every ``retry_s``;
    - announced: announce again every ``reannounce_s``, so a route lost with a session reset
      or a restarted ExaBGP heals. A withdrawal is not repeated (ExaBGP logs every withdraw of
      a route it does not hold as an error).
    """
    wanted: Kind = "announce" if want else "withdraw"
    if last is None or last.kind != wanted:
        return wanted
    if last.ok is None:
        return None
    if not last.ok:
        return wanted if now - last.at >= retry_s else None
    if want and now - last.at >= reannounce_s:
        return wanted
    return None


def is_hung(oldest_unanswered_at: float | None, now: float, hang_s: float = HANG_S) -> bool:
    """ExaBGP left a command unanswered for ``hang_s``: it is stopped or stuck."""
    return oldest_unanswered_at is not None and now - oldest_unanswered_at >= hang_s


def restart_delay(quick_deaths: int) -> float:
    """Seconds to wait before restarting ExaBGP: 0 after a stable run, then 1, 2, 4 ... 30 s
    while it keeps dying within ``STABLE_S`` of its start (a crash loop must not spin)."""
    if quick_deaths <= 0:
        return 0.0
    return float(min(RESTART_MAX_S, 2.0 ** (quick_deaths - 1)))


# --- the driver -------------------------------------------------------------------------------


class ExabgpDriver:
    """Implements :class:`esc.drivers.base.Bgp`."""

    def __init__(
        self,
        cfg: EscConfig,
        paths: NodePaths,
        *,
        exabgp_argv: Sequence[str] = ("exabgp",),
        run_as: str | None = RUN_AS,
        python: str = sys.executable,
        ack_timeout_s: float = ACK_TIMEOUT_S,
        hang_s: float = HANG_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        # Rendering validates every value now: a bad config fails here, not on failover.
        self._commands: dict[Kind, str] = {
            "announce": announce_command(cfg),
            "withdraw": withdraw_command(cfg),
        }
        self.cfg = cfg
        self.paths = paths
        self.conf = conf_path(paths)
        self.socket = socket_path(paths)
        self.log_file = log_path(paths)
        self.exabgp_argv = list(exabgp_argv)
        self.run_as = _account(run_as)
        self.python = python
        self.ack_timeout_s = ack_timeout_s
        self.hang_s = hang_s
        self.reannounce_s = cfg.bgp.reannounce_s if cfg.bgp is not None else 5.0
        self.clock = clock
        self._started = False
        self._want = False
        self._proc: subprocess.Popen[bytes] | None = None
        self._spawned_at = 0.0
        self._restart_at = 0.0
        self._quick_deaths = 0
        self._restarts = 0
        self._listener: socket.socket | None = None
        self._conn: socket.socket | None = None
        self._rbuf = b""
        self._seq = 0
        self._in_flight: deque[Sent] = deque()
        self._last: Sent | None = None
        self._session = "unknown"
        self._last_error: str | None = None

    # --- Bgp protocol -------------------------------------------------------------------------

    def start(self) -> None:
        """Write exabgp.conf, open the API socket and start ExaBGP, withdrawn. Returns at once;
        the helper connects a moment later (``status().connected``)."""
        if self._started and self._alive():
            return
        self._want = False
        self._last_error = None
        if self.run_as is not None:
            blocked = unsearchable_parent(self.conf, self.run_as.uid)
            if blocked is not None:
                raise BgpError(
                    f"{blocked} is not searchable by the {self.run_as.name} user ExaBGP runs as "
                    f"(it must reach {self.conf.parent}): chmod o+x {blocked}"
                )
        self.write_config()
        self._listen()
        self._started = True
        self._spawn(self.clock())

    def stop(self) -> None:
        """Kill ExaBGP: the session drops and the router withdraws the route."""
        self._started = False
        self._want = False
        self._kill()
        self._proc = None
        self._spawned_at = 0.0
        self._disconnect()
        if self._listener is not None:
            self._listener.close()
            self._listener = None
            with contextlib.suppress(FileNotFoundError):
                self.socket.unlink()
        self._session = "unknown"

    def set_announced(self, want: bool) -> None:
        """Announce (MASTER) or withdraw the anycast route. Idempotent: a command is sent only
        when the desired state changes; waits for ExaBGP's answer at most ``ack_timeout_s``."""
        self._want = want
        if not self._started:
            return
        now = self.clock()
        self._accept()
        self._drain()
        kind = due_command(want, self._last, now, self.reannounce_s)
        if kind is None:
            return
        if self._conn is None:
            self._error(f"{kind} not sent: ExaBGP's API helper is not connected (yet)")
            return
        sent = self._send(kind, now)
        if sent is not None:
            self._wait_answer(sent)

    def tick(self) -> None:
        """Once per agent cycle, never waiting: restart a dead ExaBGP, take the helper's
        connection and ExaBGP's answers, kill a hung ExaBGP, re-announce when due."""
        if not self._started:
            return
        now = self.clock()
        self._reap(now)
        if self._proc is None and now >= self._restart_at:
            self._spawn(now)
        self._accept()
        self._drain()
        oldest = self._in_flight[0] if self._in_flight else None
        if oldest is not None and is_hung(oldest.at, now, self.hang_s):
            self._error(
                f"ExaBGP left {oldest.kind!r} unanswered for {now - oldest.at:.1f} s: killing it"
                " (the session drops, so the router withdraws the route)"
            )
            self._kill(wait_s=0.1)
            self._disconnect()  # its commands are void; the next tick reaps and restarts it
            self._reap(now)
            return
        kind = due_command(self._want, self._last, now, self.reannounce_s)
        if kind is not None and self._conn is not None:
            self._send(kind, now)

    def status(self) -> BgpStatus:
        # Each field read once: the agent's API thread may ask while the main thread acts.
        last, want, proc = self._last, self._want, self._proc
        wanted = "announce" if want else "withdraw"
        return BgpStatus(
            running=proc is not None and proc.poll() is None,
            connected=self._conn is not None,
            announced=want,
            acked=last is not None and last.kind == wanted and last.ok is True,
            session=self._session,
            last_error=self._last_error,
            restarts=self._restarts,
            pid=proc.pid if proc is not None else None,
        )

    # --- config and process -------------------------------------------------------------------

    def helper_argv(self) -> list[str]:
        return [self.python, "-m", HELPER_MODULE, str(self.socket)]

    def write_config(self) -> bool:
        """Render exabgp.conf; True if it changed."""
        text = render_exabgp(self.cfg, self.helper_argv())
        if self.conf.exists() and self.conf.read_text() == text:
            return False
        owner = None if self.run_as is None else (self.run_as.uid, self.run_as.gid)
        write_atomic(self.conf, text, mode=0o600, owner=owner)  # it may hold the MD5 secret
        return True

    def _env(self) -> dict[str, str]:
        # Inherited exabgp* variables would override ours (the dotted form wins), and an
        # inherited exabgp_cli_pipe turns ExaBGP into its own CLI client.
        env = {k: v for k, v in os.environ.items() if not k.lower().startswith("exabgp")}
        user = self.run_as.name if self.run_as else pwd.getpwuid(os.getuid()).pw_name
        return {**env, **exabgp_env(user)}

    def _argv(self) -> list[str]:
        name = self.exabgp_argv[0]
        exe = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")
        if exe is None:
            raise BgpError(f"{name} not found (apt-get install exabgp)")
        drop = setpriv_drop(self.run_as) if self.run_as is not None else []
        setpriv = [*DIE_WITH_PARENT_KILL[:-1], *drop, "--"]
        return [*setpriv, exe, *self.exabgp_argv[1:], str(self.conf)]

    def _spawn(self, now: float) -> None:
        # A failed start is retried with the crash-loop back-off, not at every tick.
        self._restart_at = now + restart_delay(self._quick_deaths + 1)
        argv = self._argv()
        try:
            with os.fdopen(open_append(self.log_file), "ab") as out:  # 0640, no symlink
                # ExaBGP logs to the file itself; its stdout/stderr (start-up failures,
                # tracebacks, the helper's stderr) go there too.
                self._proc = subprocess.Popen(
                    argv,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    process_group=0,  # signals meant for the agent's terminal don't reach it
                    env=self._env(),
                    close_fds=True,
                )
        except OSError as exc:
            raise BgpError(f"cannot start ExaBGP: {exc}") from exc
        if self._spawned_at:
            self._restarts += 1
        self._spawned_at = now
        log.info("ExaBGP started (pid %s)", self._proc.pid)

    def _alive(self) -> bool:
        proc = self._proc
        return proc is not None and proc.poll() is None

    def _reap(self, now: float) -> None:
        """Notice a dead ExaBGP: forget its connection and schedule the restart."""
        if self._proc is None or self._proc.poll() is None:
            return
        rc = self._proc.returncode
        ran = now - self._spawned_at
        self._quick_deaths = self._quick_deaths + 1 if ran < STABLE_S else 0
        delay = restart_delay(self._quick_deaths)
        self._restart_at = now + delay
        self._proc = None
        self._disconnect()
        self._session = "down"
        self._error(f"ExaBGP exited (status {rc}) after {ran:.1f} s; restarting in {delay:.0f} s")

    def _kill(self, wait_s: float = 2.0) -> None:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        proc.kill()  # SIGKILL works on a stopped (SIGSTOP) process too
        try:
            proc.wait(wait_s)
        except subprocess.TimeoutExpired:
            log.error("ExaBGP (pid %s) still there %.1f s after SIGKILL", proc.pid, wait_s)

    # --- API socket ---------------------------------------------------------------------------

    def _listen(self) -> None:
        if self._listener is not None:
            return
        path = str(self.socket)
        if len(path.encode()) > SOCKET_PATH_MAX:
            raise BgpError(f"API socket path too long for a unix socket: {path}")
        self.socket.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.socket.unlink()  # left by a killed agent
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(path)
            os.chmod(path, 0o600)
            if self.run_as is not None:  # the helper ExaBGP starts runs as that user
                os.chown(path, self.run_as.uid, self.run_as.gid)
            sock.listen(4)
        except OSError as exc:
            sock.close()
            raise BgpError(f"cannot listen on {path}: {exc}") from exc
        sock.setblocking(False)
        self._listener = sock

    def _accept(self) -> None:
        """Take the newest helper connection: a new ExaBGP, or a helper ExaBGP respawned."""
        if self._listener is None:
            return
        while True:
            try:
                conn, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._error(f"accept on {self.socket} failed: {exc}")
                return
            self._disconnect()
            conn.settimeout(0.05)  # bounds sendall; reads only follow select()
            self._conn = conn
            log.info("ExaBGP's API helper connected")

    def _disconnect(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        # Unanswered commands died with the connection; whatever ExaBGP holds now, the next
        # command sent is the desired state (``due_command`` with no last command).
        self._rbuf = b""
        self._in_flight.clear()
        self._last = None

    def _send(self, kind: Kind, now: float) -> Sent | None:
        assert self._conn is not None
        self._seq += 1
        sent = Sent(self._seq, kind, now)
        try:
            self._conn.sendall(self._commands[kind].encode("ascii") + b"\n")
        except OSError as exc:
            self._error(f"{kind} not sent: {exc}")
            self._disconnect()
            return None
        self._in_flight.append(sent)
        self._last = sent
        log.debug("sent %s", self._commands[kind])
        return sent

    def _drain(self, wait: float = 0.0) -> None:
        """Read what is there (waiting at most ``wait``) and apply each line."""
        if self._conn is None:
            return
        try:
            ready, _, _ = select.select([self._conn], [], [], wait)
            if not ready:
                return
            data = self._conn.recv(65536)
        except OSError as exc:
            self._error(f"reading ExaBGP's answers failed: {exc}")
            self._disconnect()
            return
        if not data:
            log.warning("ExaBGP's API helper disconnected")
            self._disconnect()
            return
        *lines, self._rbuf = (self._rbuf + data).split(b"\n")
        for raw in lines:
            self._apply(parse_answer(raw.decode("ascii", errors="replace")))

    def _apply(self, item: Answer | NeighborEvent | None) -> None:
        if isinstance(item, NeighborEvent):
            if item.state != self._session:
                log.info("BGP session with %s: %s", item.peer, item.state)
            self._session = item.state
        elif isinstance(item, Answer):
            if not self._in_flight:
                log.warning("ExaBGP answered a command that was not sent on this connection")
                return
            sent = replace(self._in_flight.popleft(), ok=item.ok)
            if self._last is not None and sent.seq == self._last.seq:
                self._last = sent
            if item.ok:
                if sent.seq == self._seq:
                    self._last_error = None
            else:
                self._error(f"ExaBGP answered error to {self._commands[sent.kind]!r}")

    def _wait_answer(self, sent: Sent) -> None:
        # Real time, not self.clock: this bound is what keeps the agent's cycle short.
        deadline = time.monotonic() + self.ack_timeout_s
        while any(s.seq == sent.seq for s in self._in_flight):
            left = deadline - time.monotonic()
            if left <= 0 or self._conn is None:
                self._error(
                    f"no answer from ExaBGP to {sent.kind} within {self.ack_timeout_s:.2f} s"
                )
                return
            self._drain(left)

    def _error(self, text: str) -> None:
        if text != self._last_error:
            log.warning("%s", text)
        self._last_error = text
