"""In-memory fakes of the driver interfaces, for unit tests. No I/O in this module.

Each fake keeps the state its real driver would observe, records every call in ``calls``, and
raises the error put in ``fail[method]`` (once), so tests need no patching.
"""

from __future__ import annotations

import math
from pathlib import Path

from esc.drivers.base import Bgp, BgpStatus, Database, FollowResult, Progress
from esc.errors import DbError
from esc.model import DbRole, DbStatus, QuorumObs, SyncRecord


class FakeDatabase:
    """A local PostgreSQL as the agent sees it: a role, a timeline and an LSN that move the way
    the real driver moves them (promote bumps the timeline, follow picks the same methods).

    Knobs: ``fail['promote'] = DbError(...)`` fails the next promote; ``diverged_commits``
    (commits made as primary while the peer was gone) makes the next rewind report a
    preserved file; ``peer_connected`` says whether a standby streams from us."""

    FIRST_LSN = 0x3000000

    def __init__(self, name: str = "ha0", role: DbRole = DbRole.ABSENT) -> None:
        self.name = name
        self.role = role
        self.timeline = 1 if role is not DbRole.ABSENT else 0
        self.lsn = self.FIRST_LSN if role is not DbRole.ABSENT else 0
        self.receive_lsn = 0
        self.primary_host: str | None = None  # whom a standby follows
        self.streaming = role is DbRole.STANDBY
        self.sync_names = ""
        self.peer_connected = False
        self.replay_lag_s = 0.0
        self.diverged_commits = 0
        self.was_primary = role is DbRole.PRIMARY
        self.fail: dict[str, Exception] = {}
        self.calls: list[str] = []
        self._role_when_stopped = role

    # --- helpers for tests ---------------------------------------------------------------

    def _enter(self, method: str) -> None:
        self.calls.append(method)
        exc = self.fail.pop(method, None)
        if exc is not None:
            raise exc

    def commit(self, n: int = 1) -> None:
        """n transactions on the primary; without a connected peer they are diverged."""
        if self.role is not DbRole.PRIMARY:
            raise DbError(f"{self.name}: cannot commit on a {self.role}")
        self.lsn += 0x100 * n
        if not self.peer_connected:
            self.diverged_commits += n

    # --- Database protocol -----------------------------------------------------------------

    def status(self) -> DbStatus:
        self._enter("status")
        if self.role is DbRole.PRIMARY:
            names = self.sync_names
            sync = names.strip('"') if names and self.peer_connected else None
            return DbStatus(self.role, self.timeline, self.lsn, sync_standby=sync, sync_names=names)
        if self.role is DbRole.STANDBY:
            return DbStatus(
                self.role,
                self.timeline,
                self.lsn,
                receive_lsn=max(self.receive_lsn, self.lsn),
                streaming=self.streaming,
                sync_names=self.sync_names,
                replay_lag_s=self.replay_lag_s,
            )
        return DbStatus(self.role)

    def init_primary(self) -> None:
        self._enter("init_primary")
        if self.role is DbRole.ABSENT:
            self.role, self.timeline, self.lsn = DbRole.PRIMARY, 1, self.FIRST_LSN
            self.was_primary = True
        elif self.role is DbRole.STOPPED:
            self.role = self._role_when_stopped

    def start(self) -> None:
        self._enter("start")
        if self.role is DbRole.ABSENT:
            raise DbError(f"{self.name}: cannot start: no cluster")
        if self.role is DbRole.STOPPED:
            self.role = self._role_when_stopped

    def stop(self) -> None:
        self._enter("stop")
        if self.role in (DbRole.PRIMARY, DbRole.STANDBY):
            self._role_when_stopped = self.role
            self.role = DbRole.STOPPED
            self.streaming = False

    def promote(self, above_timeline: int = 0) -> None:
        self._enter("promote")
        if self.role is DbRole.PRIMARY:
            return
        if self.role is not DbRole.STANDBY:
            raise DbError(f"cannot promote: database is {self.role}")
        self.role, self.timeline = DbRole.PRIMARY, max(self.timeline, above_timeline) + 1
        self.streaming, self.primary_host, self.was_primary = False, None, True
        self.diverged_commits = 0

    def follow(self, primary_host: str, progress: Progress | None = None) -> FollowResult:
        self._enter("follow")
        if self.role is DbRole.STANDBY and self.streaming and self.primary_host == primary_host:
            return FollowResult("none")
        result: FollowResult
        if self.role is DbRole.ABSENT:
            if progress is not None:
                progress("cloning", 1 << 20, 1 << 20)
            result = FollowResult("reclone")
        elif self.was_primary:
            preserved = None
            if self.diverged_commits:
                preserved = Path(f"/fake/{self.name}/diverged/diverged-{self.lsn:X}.txt")
            result = FollowResult("rewind", preserved, self.lsn if preserved else None)
        else:
            result = FollowResult("reconfigure")
        self.role, self.primary_host, self.streaming = DbRole.STANDBY, primary_host, True
        self.timeline = max(self.timeline, 1)
        self.lsn = max(self.lsn, self.FIRST_LSN)
        self.was_primary, self.diverged_commits = False, 0
        return result

    def set_synchronous(self, standby_name: str | None) -> None:
        self._enter("set_synchronous")
        if self.role not in (DbRole.PRIMARY, DbRole.STANDBY):
            raise DbError(f"{self.name}: database is {self.role}")
        self.sync_names = "" if standby_name is None else f'"{standby_name}"'


def _conforms(fake: FakeDatabase) -> Database:
    """mypy checks here that the fake implements the Database protocol."""
    return fake


class FakeBgp:
    """ExaBGP and the router as the agent sees them: ``routed`` says whether the router holds
    the anycast route, which is true only while ExaBGP runs and has acknowledged an announce.

    Knobs: ``fail['start'] = BgpError(...)`` fails the next start; ``answering = False`` makes
    ExaBGP leave commands unanswered (``acked`` stays False, ``last_error`` says why) until it
    answers again at a ``tick()``; ``crash()`` kills ExaBGP (the router drops the route) and the
    next ``tick()`` restarts it and re-sends the wish, as the real driver does."""

    def __init__(self) -> None:
        self.started = False  # between start() and stop(): a dead ExaBGP is restarted
        self.running = False
        self.announced = False  # the wish
        self.acked = False
        self.routed = False  # what the router holds
        self.answering = True
        self.restarts = 0
        self.last_error: str | None = None
        self.sent: list[str] = []  # "announce" / "withdraw", as written to ExaBGP
        self.fail: dict[str, Exception] = {}
        self.calls: list[str] = []

    def _enter(self, method: str) -> None:
        self.calls.append(method)
        exc = self.fail.pop(method, None)
        if exc is not None:
            raise exc

    def _send(self) -> None:
        self.sent.append("announce" if self.announced else "withdraw")
        if not self.answering:
            self.acked = False
            self.last_error = f"no answer from ExaBGP to {self.sent[-1]}"
            return
        self.acked, self.last_error = True, None
        self.routed = self.announced

    # --- helpers for tests ---------------------------------------------------------------

    def crash(self) -> None:
        """ExaBGP killed: the session drops, so the router withdraws the route."""
        self.running = self.acked = self.routed = False

    # --- Bgp protocol ----------------------------------------------------------------------

    def start(self) -> None:
        self._enter("start")
        if self.running:
            return
        self.started = self.running = True
        self.announced = self.acked = self.routed = False

    def stop(self) -> None:
        self._enter("stop")
        self.started = self.running = False
        self.announced = self.acked = self.routed = False

    def set_announced(self, want: bool) -> None:
        self._enter("set_announced")
        changed = want != self.announced or not self.acked
        self.announced = want
        if self.running and changed:
            self._send()

    def tick(self) -> None:
        self._enter("tick")
        if self.started and not self.running:
            self.running, self.restarts = True, self.restarts + 1
            self._send()
        elif self.running and not self.acked:
            self._send()

    def status(self) -> BgpStatus:
        return BgpStatus(
            running=self.running,
            connected=self.running,
            announced=self.announced,
            acked=self.acked,
            session="up" if self.running else "down",
            last_error=self.last_error,
            restarts=self.restarts,
        )


def _conforms_bgp(fake: FakeBgp) -> Bgp:
    """mypy checks here that the fake implements the Bgp protocol."""
    return fake


class FakeQuorum:
    """etcd as one dict: whoever wants the free key gets it; a record swap succeeds from the
    current revision, by the holder only. ``reachable = False`` cuts this node off (it is then
    no longer a holder, and its requests are not carried out)."""

    def __init__(self, node: str, shared: dict[str, object] | None = None) -> None:
        self.node = node
        self.shared: dict[str, object] = shared if shared is not None else {}
        self.reachable = True

    def _rec(self) -> tuple[SyncRecord | None, int]:
        rec = self.shared.get("sync")
        rev = self.shared.get("sync_rev", 0)
        return (rec if isinstance(rec, SyncRecord) else None), (rev if isinstance(rev, int) else 0)

    def observe(self) -> QuorumObs:
        if not self.reachable:
            return QuorumObs(reachable=False, holder=False, error="cut off")
        leader = self.shared.get("leader")
        rec, rev = self._rec()
        holder = leader == self.node
        return QuorumObs(
            reachable=True,
            holder=holder,
            leader=leader if isinstance(leader, str) else None,
            sync=rec,
            sync_revision=rev,
            serve_left=5.0 if holder else 0.0,
            takeover_in=0.0 if leader is None else math.inf,
        )

    def want_leader(self, want: bool) -> None:
        if not self.reachable:
            return
        if want and self.shared.get("leader") is None:
            self.shared["leader"] = self.node
        elif not want and self.shared.get("leader") == self.node:
            del self.shared["leader"]

    def stop(self) -> None:
        self.want_leader(False)

    def record_sync(self, record: SyncRecord, from_revision: int) -> None:
        _, rev = self._rec()
        if self.reachable and self.shared.get("leader") == self.node and rev == from_revision:
            self.shared["sync"] = record
            self.shared["sync_rev"] = rev + 1
