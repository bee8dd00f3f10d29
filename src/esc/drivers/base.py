"""The driver interfaces the agent is written against. No I/O in this module.

Each real driver lives in its own file and translates its library's errors into the project's
(``raise DbError(...) from exc``). ``drivers/fake.py`` holds in-memory fakes for unit tests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from esc.model import DbStatus, VrrpState

Progress = Callable[[int, int], None]  # (done_bytes, total_bytes); total 0 when unknown


@dataclass(frozen=True)
class FollowResult:
    """What ``Database.follow`` had to do to become a standby."""

    method: str  # "none" (already following), "reconfigure", "rewind", "reclone"
    preserved: Path | None = None  # dump of local transactions the new primary lacks
    diverged_from_lsn: int | None = None


class Database(Protocol):
    """The local PostgreSQL of one node. Every method is idempotent."""

    def status(self) -> DbStatus: ...

    def init_primary(self) -> None:
        """First boot of the first node: initdb (data checksums), settings, roles, start."""

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def promote(self) -> None:
        """Standby -> primary, returning once it accepts writes. No-op on a primary."""

    def follow(self, primary_host: str, progress: Progress | None = None) -> FollowResult:
        """Become a streaming standby of ``primary_host``: reconfigure, rewind (after
        preserving diverged WAL) or re-clone, then start. No-op if already streaming from it."""

    def set_synchronous(self, standby_name: str | None) -> None:
        """Primary only: name the synchronous standby (None: asynchronous). Reload, no restart."""


class Vrrp(Protocol):
    """keepalived on this node."""

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def is_alive(self) -> bool: ...

    def state(self) -> VrrpState: ...

    def set_gate(self, open_: bool) -> None:
        """Write the track file: open lets keepalived hold the VIP, closed forces FAULT."""


class Vip(Protocol):
    """The virtual address on its interface (kernel view, not keepalived's)."""

    def is_held(self) -> bool: ...

    def remove(self) -> None: ...


class Service(Protocol):
    """escmanager's activation switch and health."""

    def activate(self) -> None: ...

    def deactivate(self) -> None: ...

    def is_active(self) -> bool: ...

    def check_health(self) -> bool: ...
