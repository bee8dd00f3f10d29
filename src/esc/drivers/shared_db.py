"""``ha_mode = cinder``: one PostgreSQL cluster on one shared volume, run by whichever node holds
the volume (implements :class:`esc.drivers.base.Database` for the agent).

The agent's vocabulary maps onto the volume:

- ``standby``: the volume is not attached here; this node is ready to take it over.
- ``promote``: attach (lease, mount), then start PostgreSQL on it (crash recovery when the
  previous holder died), creating the cluster on the first attach of a blank volume.
- ``follow``: give the volume up (stop PostgreSQL, unmount, drop the lease) so the peer can
  take it; there is nothing to replicate.
- ``stopped``: attached here, PostgreSQL not running (it crashed): ``start`` restarts it.

There is one copy of the data, so nothing can diverge and no standby is ever outdated; what
protects it is that only the lease holder mounts it (see :mod:`esc.drivers.volume`).
"""

from __future__ import annotations

import logging

from esc.drivers.base import FollowResult, Progress
from esc.drivers.postgres import PostgresDriver
from esc.drivers.volume import Volume, VolumeLease
from esc.errors import DbError, DriverError
from esc.model import DbRole, DbStatus

log = logging.getLogger(__name__)


class SharedVolumeDatabase:
    def __init__(self, pg: PostgresDriver, volume: Volume, lease: VolumeLease) -> None:
        if pg.replicated:
            raise DbError("cinder mode runs PostgreSQL without replication (replicated=False)")
        self.pg = pg
        self.volume = volume
        self.lease = lease

    def __repr__(self) -> str:
        return f"SharedVolumeDatabase({self.volume.device}, attached={self.lease.held})"

    def status(self) -> DbStatus:
        if not self.lease.held:
            return DbStatus(DbRole.STANDBY)
        st = self.pg.status()
        # Attached but no cluster visible (mount or initdb cut short): start() finishes it.
        return DbStatus(DbRole.STOPPED) if st.role is DbRole.ABSENT else st

    def init_primary(self) -> None:
        self.promote()

    def start(self) -> None:
        """Restart PostgreSQL on the volume this node holds (never takes the volume: only
        ``promote`` does, when keepalived elected this node)."""
        if not self.lease.held:
            raise DbError(f"volume {self.volume.device} is not attached here")
        self._run_on_volume()

    def stop(self) -> None:
        self.pg.stop()

    def promote(self, above_timeline: int = 0) -> None:
        # One database on the volume: there is no other history whose timeline id it could
        # reuse (``above_timeline`` is for replicated pairs).
        self._attach()
        self._run_on_volume()

    def follow(self, primary_host: str, progress: Progress | None = None) -> FollowResult:
        """Release the volume for ``primary_host`` to attach."""
        if not self.lease.held:
            return FollowResult("none")
        self.pg.stop()
        self.volume.unmount()
        self.lease.release()
        log.info("volume %s released for %s", self.volume.device, primary_host)
        return FollowResult("release")

    def set_synchronous(self, standby_name: str | None) -> None:
        """Nothing to do: the cluster has no standby."""

    def _attach(self) -> None:
        self.lease.acquire()
        try:
            self.volume.mount()
            if self.pg.postmaster_alive() and not self._ours_running():
                # The previous holder's postmaster still runs on the volume (its agent died,
                # PostgreSQL did not): two servers on one data directory would corrupt it.
                raise DbError(
                    f"volume {self.volume.device}: a PostgreSQL of the previous holder still "
                    "runs on it; not starting a second one"
                )
        except BaseException:
            self._give_back()
            raise
        log.info("volume %s attached at %s", self.volume.device, self.volume.mountpoint)

    def _ours_running(self) -> bool:
        """The live postmaster answers on this node's socket (our agent restarted under it)."""
        try:
            return self.pg.status().role is DbRole.PRIMARY
        except DriverError:
            return False

    def _give_back(self) -> None:
        try:
            if not self.pg.postmaster_alive():
                self.volume.unmount()
        except DriverError as exc:
            log.warning("volume %s: unmount after a failed attach: %s", self.volume.device, exc)
        self.lease.release()

    def _run_on_volume(self) -> None:
        if not self.volume.mounted_here():
            # Never let initdb or pg_ctl run on the empty mount point (the local disk).
            raise DbError(f"volume {self.volume.device} is not mounted at {self.volume.mountpoint}")
        if self.pg.has_cluster():
            self.pg.start()
        else:
            log.info("volume %s is blank: creating the cluster", self.volume.device)
            self.pg.init_primary()
