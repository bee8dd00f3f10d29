"""The agent's database driver (drivers/postgres/'s ``PostgresDriver`` as the agent sees it)
over the simulated server of db.py: the same verbs, the same errors, the time each step
takes (the agent is stuck in the call meanwhile), and drivers/postgres/follow.py's algorithm:
"none" when already streaming from the source; the source reached first (CHECKPOINT); stop;
a crashed standby reconfigured; otherwise pg_rewind's verdict from the timeline histories
(same timeline id: "no rewind required"), the diverged writes kept in a dump before a rewind;
a re-clone without data.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from esc.drivers.base import FollowResult, Progress
from esc.errors import DbError
from esc.model import DbRole, DbStatus

from . import wal
from .db import (
    CHECKPOINT_S,
    CLONE_S,
    CONNECT_TIMEOUT_S,
    INITDB_S,
    PROMOTE_S,
    REWIND_S,
    SESSION_TIMEOUT_S,
    START_S,
    STATUS_WATCHDOG_S,
    STOP_S,
    Dump,
    Postgres,
)


class Blocker(Protocol):
    def block(self, seconds: float, until: Callable[[], bool] | None = None) -> bool: ...


class SimDatabase:
    """The agent's database driver (implements ``esc.drivers.base.Database``)."""

    def __init__(self, pg: Postgres, node: Blocker) -> None:
        self.pg = pg
        self.node = node

    def _answers(self, timeout: float) -> bool:
        """A query on a frozen server: answered if it resumes within ``timeout``."""
        pg = self.pg
        if not pg.host.pg_frozen():
            return True
        return self.node.block(timeout, until=lambda: not pg.host.pg_frozen())

    def _frozen_session(self, what: str) -> None:
        if not self._answers(SESSION_TIMEOUT_S):
            raise DbError(f"{self.pg.name}: {what}: no answer (statement timeout)")

    def status(self) -> DbStatus:
        pg = self.pg
        if pg.running and not self._answers(STATUS_WATCHDOG_S):
            raise DbError(f"{pg.name}: status query failed: no answer in 1.5 s")
        return pg.status()

    def init_primary(self) -> None:
        if self.pg.tip is None:
            self.node.block(INITDB_S)
            self.pg.initdb()
            self.pg.host.trace("initdb: timeline 1")
        else:
            self.start()

    def start(self) -> None:
        if self.pg.tip is None:
            raise DbError(f"cannot start: no cluster in {self.pg.name}")
        if self.pg.running:
            return
        self.node.block(START_S)
        self.pg.start()

    def stop(self) -> None:
        self.node.block(STOP_S)
        self.pg.stop()

    def promote(self, above_timeline: int = 0) -> None:
        pg = self.pg
        if pg.role is DbRole.STANDBY:
            self._frozen_session("promote")
            self.node.block(PROMOTE_S)
            if pg.role is not DbRole.STANDBY:
                raise DbError(f"cannot promote: database is {pg.role.value}")
            pg.promote(above_timeline)
        elif pg.role is not DbRole.PRIMARY:
            raise DbError(f"cannot promote: database is {pg.role.value}")

    def set_synchronous(self, standby_name: str | None) -> None:
        pg = self.pg
        if not pg.running:
            raise DbError(f"{pg.name}: database is {pg.role.value}")
        self._frozen_session("ALTER SYSTEM")
        if not pg.running:
            raise DbError(f"{pg.name}: database is {pg.role.value}")
        pg.set_sync("" if standby_name is None else f'"{standby_name}"')
        pg.host.trace(f"synchronous_standby_names = '{pg.sync_names}'")

    def _reach(self, src: Postgres) -> None:
        """A libpq session on the source (CHECKPOINT, pg_rewind, pg_basebackup)."""
        if src.running and src.usable and self.pg.cluster.linked(self.pg, src):
            return
        if src.host.host_up and not src.running and self.pg.cluster.linked(self.pg, src):
            raise DbError(f"cannot reach primary {src.name}: connection refused")
        self.node.block(CONNECT_TIMEOUT_S)
        raise DbError(f"cannot reach primary {src.name}: timeout expired")

    def follow(self, primary_host: str, progress: Progress | None = None) -> FollowResult:
        pg = self.pg
        src = self.pg.cluster.peer(pg)
        if pg.role is DbRole.STANDBY and pg.recv is not None and pg.recv.source is src:
            return FollowResult("none")
        if pg.running and not self._answers(STATUS_WATCHDOG_S):
            raise DbError(f"{pg.name}: status query failed: no answer in 1.5 s")
        if pg.tip is None:
            self._reach(src)
            self.node.block(CLONE_S)
            self._reach(src)
            assert src.tip is not None
            pg.tip = src.tip
            self._become_standby(src)
            return FollowResult("reclone")
        self._reach(src)
        self.node.block(CHECKPOINT_S)
        crashed_standby = not pg.running and pg.standby_mode and not pg.clean
        self.stop()
        assert src.tip is not None and pg.tip is not None
        if crashed_standby:
            self._become_standby(src)
            return FollowResult("reconfigure")
        self._reach(src)  # pg_rewind --dry-run
        point = wal.rewind_point(pg.tip, src.tip)
        if point is None:
            self._become_standby(src)
            return FollowResult("reconfigure")
        base = wal.common(pg.tip, src.tip)
        lost = wal.writes_after(base, pg.tip)
        preserved = None
        if lost:
            pg.dumps.append(Dump(pg.name, self.pg.sim.now, tuple(lost)))
            preserved = Path(f"/sim/{pg.name}/diverged/diverged-{pg.tip.lsn:X}.txt")
            pg.host.trace(f"diverged writes preserved: {', '.join(lost)}")
        if base is None or base.depth < point - 1:
            self.pg.cluster.anomalies.append(
                f"{pg.name}: pg_rewind's divergence point {point} is past the real one "
                f"({base!r}): records before it are silently replaced"
            )
        self.node.block(REWIND_S)
        self._reach(src)
        assert src.tip is not None
        at = src.tip
        while at.depth > point - 1 and at.parent is not None:
            at = at.parent
        diverged_lsn = at.lsn
        pg.tip = at
        self._become_standby(src)
        return FollowResult("rewind", preserved, diverged_lsn)

    def _become_standby(self, src: Postgres) -> None:
        self.node.block(START_S)
        pg = self.pg
        pg.standby_mode, pg.source, pg.sync_names = True, src.name, pg.default_sync
        pg.start()
