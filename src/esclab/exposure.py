"""Watching what the agents risk, for the fault tests and the nemesis: when each node
acknowledged alone (polled from its status), and what the diverged dumps kept.

A client that reaches both nodes by their own addresses can be answered by an old primary that
acknowledges alone (policy ``available``, after the standby-loss grace) while the partitioned
standby promoted: those writes end up in the old primary's diverged dump when it rejoins.
``esclab.nemesis.allowed_losses`` tells those apart from a lost write.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from pathlib import Path
from typing import Any

from esclab.lab import Lab
from esclab.nemesis import AloneWindows, dump_tenants
from esclab.scenarios import agent_status
from esclab.topology import NODES


class AloneWatch:
    """Polls both agents' status on a thread (every ``interval`` s) into an AloneWindows."""

    def __init__(self, lab: Lab, interval: float = 0.1) -> None:
        self.lab = lab
        self.interval = interval
        self.windows = AloneWindows()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> AloneWatch:
        self._thread.start()
        return self

    def stop(self) -> AloneWindows:
        self._stop.set()
        self._thread.join(10)
        return self.windows

    def _run(self) -> None:
        while not self._stop.is_set():
            for host in NODES:
                st = agent_status(self.lab, host, timeout=0.5)
                if st is not None:  # an agent that does not answer says nothing either way
                    self.windows.saw(host, time.time(), _since(st))
            self._stop.wait(self.interval)


def _since(st: dict[str, Any]) -> float | None:
    since = st.get("degraded_since")
    return float(since) if isinstance(since, int | float) else None


def dumps(lab: Lab, host: str) -> set[Path]:
    """Diverged transactions (files) and former data directories a node's agent kept."""
    d = lab.node_paths(host).data_dir / "diverged"
    with contextlib.suppress(OSError):
        return {p for p in d.iterdir() if p.name.startswith(("diverged-", "pgdata-", "wal-"))}
    return set()


def read_dump(path: Path) -> str:
    if not path.is_file():
        return ""  # a whole former data directory: kept, rows not counted
    with contextlib.suppress(OSError):
        return path.read_text(errors="replace")
    return ""


def wal_tenants(path: Path, prefix: str) -> set[int]:
    """This writer's tenants in WAL segments kept undecoded (forensics.keep_segments): an
    inserted row's text is in its WAL record as written."""
    pat = re.compile(re.escape(prefix.encode()) + rb"-(\d+)(?!\d)")
    out: set[int] = set()
    with contextlib.suppress(OSError):
        for seg in path.iterdir():
            out |= {int(m) for m in pat.findall(seg.read_bytes())}
    return out


def kept_tenants(lab: Lab, prefix: str) -> set[int]:
    """This writer's tenants found in any diverged dump on either node."""
    out: set[int] = set()
    for host in NODES:
        for path in dumps(lab, host):
            if path.is_dir() and path.name.startswith("wal-"):
                out |= wal_tenants(path, prefix)
            else:
                out |= dump_tenants(read_dump(path), prefix)
    return out
