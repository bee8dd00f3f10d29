"""keepalived on this node: config, supervised process, notify FIFO, gate file, heartbeat.

keepalived is the election; the agent is the gate. The agent vetoes holding the VIP by writing
1 to the track file (keepalived goes FAULT and releases the VIP) and 0 to allow it. keepalived
reports its transitions on a FIFO (``vrrp_notify_fifo``) that a reader thread turns into
events, so the agent reacts at once rather than at its next cycle, and no notify script is
spawned on the failover path.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path

from esc.addresses import IPAddress
from esc.config.schema import EscConfig, NodePaths, write_atomic
from esc.drivers.keepalived_conf import (
    fifo_path,
    gate_path,
    heartbeat_path,
    rank_path,
    render_check_script,
    render_keepalived,
)
from esc.drivers.proc import Child, pid_is_live
from esc.errors import VrrpError
from esc.model import VrrpState

log = logging.getLogger("esc.keepalived")


def parse_fifo_line(line: str) -> VrrpState | None:
    """``INSTANCE "ESC" MASTER 101`` -> MASTER; anything else -> None."""
    parts = line.split()
    if len(parts) >= 3 and parts[0] == "INSTANCE":
        try:
            return VrrpState(parts[2])
        except ValueError:
            return None
    return None


class KeepalivedDriver:
    """Implements :class:`esc.drivers.base.Vrrp`."""

    def __init__(
        self,
        cfg: EscConfig,
        paths: NodePaths,
        self_addr: IPAddress,
        on_event: Callable[[], None] = lambda: None,
    ) -> None:
        self.cfg = cfg
        self.paths = paths
        self.self_addr = self_addr
        self.on_event = on_event
        self.conf = paths.run_dir / "keepalived.conf"
        self.check_script = paths.run_dir / "esc-agent-alive"
        self.fifo = fifo_path(paths)
        self.gate = gate_path(paths)
        self.rank = rank_path(paths)
        self.heartbeat = heartbeat_path(paths)
        self._state = VrrpState.INIT
        self._gate_open: bool | None = None
        self._lock = threading.Lock()
        self._reader: threading.Thread | None = None
        self.pid_files = (paths.run_dir / "keepalived.pid", paths.run_dir / "keepalived_vrrp.pid")
        self.child = Child(
            "keepalived",
            [
                "keepalived",
                "-n",
                "-l",
                "-D",
                "-P",
                "-f",
                str(self.conf),
                "-p",
                str(paths.run_dir / "keepalived.pid"),
                "-r",
                str(paths.run_dir / "keepalived_vrrp.pid"),
            ],
            paths.log_dir / "keepalived.log",
        )

    # --- config -----------------------------------------------------------------------------

    def write_config(self) -> bool:
        """Render keepalived.conf and the check script; True if the config changed."""
        self.paths.run_dir.mkdir(parents=True, exist_ok=True)
        script = render_check_script()
        if not self.check_script.exists() or self.check_script.read_text() != script:
            write_atomic(self.check_script, script, mode=0o755)
        text = render_keepalived(self.cfg, self.self_addr, self.paths, self.check_script)
        if self.conf.exists() and self.conf.read_text() == text:
            return False
        write_atomic(self.conf, text)
        return True

    # --- process ----------------------------------------------------------------------------

    def start(self) -> None:
        if self.child.is_alive():
            return
        self.write_config()
        self._clear_stale_pid_files()
        self._ensure_fifo()
        self.heartbeat.touch()
        # keepalived's init_file overwrites the gate with 1 (closed) at start; the agent's next
        # cycle reopens it if this node may hold the VIP.
        self._gate_open = False
        with self._lock:
            self._state = VrrpState.INIT
        self.child.start()
        log.info("keepalived started (pid %s)", self.child.pid)

    def _clear_stale_pid_files(self) -> None:
        # A killed keepalived's VRRP child lingers as a zombie until PID 1 reaps it, and
        # keepalived then refuses to start ("daemon is already running"): drop such files.
        for f in self.pid_files:
            try:
                pid = int(f.read_text().split()[0])
            except (OSError, ValueError, IndexError):
                continue
            if not pid_is_live(pid, ("keepalived",)):
                f.unlink(missing_ok=True)

    def stop(self) -> None:
        self.child.stop()
        with self._lock:
            self._state = VrrpState.STOP

    def reload(self, cfg: EscConfig) -> bool:
        """Apply a changed config without a restart (SIGHUP keeps the instance's state, so no
        role change). True if keepalived.conf changed."""
        self.cfg = cfg
        changed = self.write_config()
        if changed and self.child.is_alive() and self.child.pid:
            os.kill(self.child.pid, signal.SIGHUP)
        return changed

    def is_alive(self) -> bool:
        return self.child.is_alive()

    def state(self) -> VrrpState:
        if not self.child.is_alive():
            return VrrpState.DEAD
        with self._lock:
            return self._state

    # --- gate and heartbeat -----------------------------------------------------------------

    def set_gate(self, open_: bool) -> None:
        _write_if_changed(self.gate, "0\n" if open_ else "1\n")
        self._gate_open = open_

    @property
    def gate_open(self) -> bool:
        return bool(self._gate_open)

    def set_rank(self, rank: int) -> None:
        """The data rank keepalived adds to this node's priority (track_file esc_rank)."""
        _write_if_changed(self.rank, f"{rank}\n")

    def beat(self) -> None:
        """Touch the heartbeat the check script watches: a hung agent loses the VIP."""
        try:
            os.utime(self.heartbeat)
        except FileNotFoundError:
            self.heartbeat.touch()

    # --- notify FIFO ------------------------------------------------------------------------

    def _ensure_fifo(self) -> None:
        try:
            if not stat.S_ISFIFO(os.stat(self.fifo).st_mode):
                self.fifo.unlink()
                os.mkfifo(self.fifo, 0o600)
        except FileNotFoundError:
            os.mkfifo(self.fifo, 0o600)
        if self._reader is None or not self._reader.is_alive():
            self._reader = threading.Thread(target=self._read_fifo, name="vrrp-fifo", daemon=True)
            self._reader.start()

    def _read_fifo(self) -> None:
        # O_RDWR: the FIFO never reports EOF when keepalived restarts and reopens it.
        try:
            fd = os.open(self.fifo, os.O_RDWR)
        except OSError as exc:
            raise VrrpError(f"cannot open {self.fifo}: {exc}") from exc
        buf = b""
        with contextlib.closing(os.fdopen(fd, "rb", buffering=0)) as fh:
            while True:
                chunk = fh.read(4096)
                if not chunk:
                    time.sleep(0.05)
                    continue
                buf += chunk
                while b"\n" in buf:
                    raw, buf = buf.split(b"\n", 1)
                    new = parse_fifo_line(raw.decode(errors="replace"))
                    if new is None:
                        continue
                    with self._lock:
                        self._state = new
                    log.info("keepalived: %s", new.value)
                    self.on_event()


def _write_if_changed(path: Path, text: str) -> None:
    """A track file's content, compared with the file itself, not a cached value: keepalived's
    init_file rewrites it when keepalived (re)starts, possibly just after we wrote it."""
    try:
        current = path.read_text()
    except FileNotFoundError:
        current = ""
    if current != text:
        write_atomic(path, text)
