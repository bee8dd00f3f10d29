"""The driver interfaces the agent is written against. No I/O in this module.

Each real driver lives in its own file and translates its library's errors into the project's
(``raise DbError(...) from exc``). ``drivers/fake.py`` holds in-memory fakes for unit tests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from esc.config.schema import EscConfig
from esc.model import DbStatus, PeerView, QuorumObs, ServiceView, SyncRecord, VrrpState

# (operation, done_bytes, total_bytes): "cloning" or "rewinding"; total 0 when unknown
Progress = Callable[[str, int, int], None]


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

    def promote(self, above_timeline: int = 0) -> None:
        """Standby -> primary, returning once it accepts writes, on a timeline above
        ``above_timeline``. No-op on a primary."""

    def follow(self, primary_host: str, progress: Progress | None = None) -> FollowResult:
        """Become a streaming standby of ``primary_host``: reconfigure, rewind (after
        preserving diverged WAL) or re-clone, then start. No-op if already streaming from it."""

    def set_synchronous(self, standby_name: str | None) -> None:
        """Primary only: name the synchronous standby (None: asynchronous). Reload, no restart."""


class Vrrp(Protocol):
    """keepalived on this node, supervised by the agent."""

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def state(self) -> VrrpState:
        """From keepalived's notify events; DEAD when no keepalived process runs."""

    def set_gate(self, open_: bool) -> None:
        """Write the track file: open lets keepalived hold the VIP, closed forces FAULT."""

    @property
    def gate_open(self) -> bool: ...

    def set_rank(self, rank: int) -> None:
        """Write the data rank keepalived adds to the configured priority."""

    def beat(self) -> None:
        """Touch the heartbeat keepalived's check script watches."""

    def reload(self, cfg: EscConfig) -> bool:
        """Re-render the config and apply it without a role change; True if it changed."""


@dataclass(frozen=True)
class BgpStatus:
    """The BGP driver's view of ExaBGP and the anycast route."""

    running: bool  # the ExaBGP process is alive
    connected: bool  # its API helper is connected: commands can be sent
    announced: bool  # desired: the route is announced (only a MASTER wants that)
    acked: bool  # ExaBGP answered "done" to the command for the desired state
    session: str = "unknown"  # "up" | "connected" | "down" | "unknown" (ExaBGP's events)
    last_error: str | None = None
    restarts: int = 0  # ExaBGP restarts after it died or hung (not counting start())
    pid: int | None = None


class Bgp(Protocol):
    """ExaBGP on this node, supervised by the agent: announces the anycast route."""

    def start(self) -> None:
        """Start ExaBGP with the route withdrawn (the session comes up, nothing announced)."""

    def stop(self) -> None:
        """Kill ExaBGP: the session drops and the router withdraws the route."""

    def set_announced(self, want: bool) -> None:
        """Announce (True) or withdraw the route; a command only when the wish changes.
        Delivery problems are recorded in ``status()`` and retried by ``tick()``."""

    def tick(self) -> None:
        """Every agent cycle, without waiting: restart a dead ExaBGP, re-announce when due."""

    def status(self) -> BgpStatus: ...


class Vip(Protocol):
    """The virtual address on its interface (kernel view, not keepalived's)."""

    def is_held(self) -> bool: ...

    def remove(self) -> None: ...


class Service(Protocol):
    """escmanager: a supervised process with an activation switch and a health check."""

    def ensure_running(self) -> None: ...

    def observe(self) -> ServiceView:
        """The latest health check and activation (no I/O: checks run in the background)."""

    def activate(self, primary: str) -> None: ...

    def deactivate(self, primary: str | None) -> None: ...

    def lease(self, until: float | None) -> None:
        """Quorum mode: an active manager serves until ``until`` (this host's time.monotonic)
        unless told again; it stops by itself at that instant when the agent is stuck.
        Called every cycle; None: no bound."""

    def reconfigure(self, cfg: EscConfig) -> None:
        """`escadm reload` applied ``cfg``: what the manager is given follows it (its
        certificate names a changed VIP or anycast address; its next start reads ``cfg``)."""

    def stop(self) -> None: ...


class PeerSource(Protocol):
    """What the peer agent last published (polled in the background)."""

    def current(self) -> PeerView: ...


class GatewaySource(Protocol):
    def ok(self) -> bool: ...

    def retarget(self, gateway: str) -> None:
        """Probe ``gateway`` from now on (a reloaded config)."""


class Quorum(Protocol):
    """Quorum mode: etcd's leader key and record of the pair, kept off the cycle's thread
    (``esc.drivers.quorum.QuorumKeeper``). Calls never block on etcd."""

    def observe(self) -> QuorumObs: ...

    def want_leader(self, want: bool) -> None:
        """Campaign for the leader key and keep it, or resign it."""

    def record_sync(self, record: SyncRecord, from_revision: int) -> None:
        """Swap the record from ``from_revision``, only as the key's holder (asynchronous:
        later observations show the outcome)."""

    def stop(self) -> None:
        """Resign (the lease revoked: the peer may take the key at once) and stop."""
