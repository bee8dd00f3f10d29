"""Block volumes for the database (``ha_mode`` ``cinder`` and ``drbd_on_cinder``).

``drbd_on_cinder``: each node has its own external volume, mounted at ``<root>/esc_database``
before PostgreSQL starts; replication is unchanged.

``cinder``: one volume shared by the pair and used only by the primary. Attaching it takes an
exclusive lease first: an ``flock`` on the volume's device node, held by the agent for as long
as the volume is mounted here. The kernel drops the lease when the agent dies, which is what a
dead node looks like; a frozen or partitioned node keeps it, and the peer cannot take the volume
(no fencing here: a stuck primary blocks failover instead of risking two writers). Even with
the lease, the volume is not used while a live postmaster from the previous holder still runs
on it (PostgreSQL's own ``postmaster.pid`` interlock, checked before starting).

Mounts are made in the agent's mount namespace: on a real VM the root one; in the lab each
node's own (``ip netns exec`` gives every node's process tree a private mount table), so when a
lab node dies its mount goes with it, as a VM's does.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from esc.config.schema import DatabaseConfig, HaConfig, NodePaths
from esc.drivers.proc import run
from esc.errors import ConfigError, DbError

log = logging.getLogger(__name__)

MOUNT_DIR = "esc_database"  # the seed's name: `mount | grep esc_database`
FS_TYPE = "ext4"


def mountpoint_of(paths: NodePaths) -> Path:
    return paths.root / MOUNT_DIR


def resolve_device(ha: HaConfig, db: DatabaseConfig) -> Path:
    """The volume's device: ``db_volume_path`` as given, or ``db_volume_id`` looked up in
    ``database.volume_dir`` the way OpenStack exposes virtio disks (``virtio-<id[:20]>``)."""
    if ha.db_volume_path:
        return Path(ha.db_volume_path)
    if ha.db_volume_id:
        return Path(db.volume_dir) / f"virtio-{ha.db_volume_id[:20]}"
    raise ConfigError(
        "ha.db_volume_id", f"ha_mode {ha.ha_mode} needs db_volume_id or db_volume_path"
    )


def _unescape(field_: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal."""
    out: list[str] = []
    i = 0
    while i < len(field_):
        code = field_[i + 1 : i + 4]
        if field_[i] == "\\" and len(code) == 3 and code.isdigit():
            out.append(chr(int(code, 8)))
            i += 4
        else:
            out.append(field_[i])
            i += 1
    return "".join(out)


def mounts_of_device(mountinfo: str, major: int, minor: int) -> list[str]:
    """Mount points of the block device ``major:minor`` in a ``/proc/<pid>/mountinfo`` text."""
    want = f"{major}:{minor}"
    points = []
    for line in mountinfo.splitlines():
        parts = line.split()
        if len(parts) > 4 and parts[2] == want:
            points.append(_unescape(parts[4]))
    return points


def lock_holders(proc_locks: str, dev_major: int, dev_minor: int, inode: int) -> list[int]:
    """PIDs holding an flock on the inode ``inode`` of device ``dev`` (``/proc/locks`` text).

    A line reads ``1: FLOCK  ADVISORY  WRITE 1234 00:05:321 0 EOF`` (device in hex)."""
    pids = []
    for line in proc_locks.splitlines():
        parts = line.split()
        if len(parts) < 6 or parts[1] != "FLOCK" or parts[0].endswith("->"):
            continue
        try:
            maj, mnr, ino = parts[5].split(":")
            if (int(maj, 16), int(mnr, 16), int(ino)) == (dev_major, dev_minor, inode):
                pids.append(int(parts[4]))
        except ValueError:
            continue
    return pids


@dataclass
class VolumeLease:
    """Exclusive attach of a shared volume: an flock on its device node, held while attached."""

    device: Path
    _fd: int | None = field(default=None, repr=False)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lease now or raise DbError naming who holds it. Idempotent."""
        if self._fd is not None:
            return
        try:
            fd = os.open(self.device, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise DbError(f"volume {self.device}: cannot open: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise DbError(f"volume {self.device}: cannot lock: {exc.strerror}") from exc
            raise DbError(
                f"volume {self.device} is attached to the other node (lease held by "
                f"pid {', '.join(map(str, self.holders())) or '?'})"
            ) from exc
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def holders(self) -> list[int]:
        try:
            st = os.stat(self.device)
            text = Path("/proc/locks").read_text()
        except OSError:
            return []
        return lock_holders(text, os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)


@dataclass
class Volume:
    """One block device and where this node mounts it."""

    device: Path
    mountpoint: Path
    fs_type: str = FS_TYPE

    def _rdev(self) -> tuple[int, int]:
        try:
            st = os.stat(self.device)
        except OSError as exc:
            raise DbError(f"volume {self.device}: {exc.strerror}") from exc
        return os.major(st.st_rdev), os.minor(st.st_rdev)

    def mounted_here(self) -> bool:
        """Mounted at our mount point, in this process's mount namespace."""
        try:
            text = Path("/proc/self/mountinfo").read_text()
        except OSError:
            return False
        try:
            rdev = self._rdev()
        except DbError:
            return False
        return str(self.mountpoint) in mounts_of_device(text, *rdev)

    def mount(self) -> None:
        """Mount (journal replay included) if not mounted; a blank volume gets its file
        system first (``ensure_filesystem``). Idempotent."""
        if self.mounted_here():
            return
        self._rdev()  # a clear error when the device is missing
        ensure_filesystem(self.device, self.fs_type)
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        os.chmod(self.mountpoint, 0o755)
        run(
            ["mount", "-t", self.fs_type, "-o", "noatime", str(self.device), str(self.mountpoint)],
            timeout=60,
        )
        log.info("volume %s mounted at %s", self.device, self.mountpoint)

    def unmount(self) -> None:
        if not self.mounted_here():
            return
        run(["umount", str(self.mountpoint)], timeout=60)
        log.info("volume %s unmounted from %s", self.device, self.mountpoint)


BLKID_NOTHING_FOUND = 2  # blkid's exit status when the device holds no known signature


def ensure_filesystem(device: Path, fs_type: str = FS_TYPE) -> bool:
    """Give a blank volume (no signature at all: a fresh Cinder volume) an ``fs_type`` file
    system labelled ``esc_database``; True when it did. A volume that holds anything else (a
    partition table, another file system, swap) is refused, never formatted: it may be
    somebody's data. Uses ``blkid -p`` (a low-level probe, not the cache)."""
    probe = run(["blkid", "-p", "-o", "export", str(device)], check=False, timeout=30)
    if probe.returncode == 0:
        found = dict(line.split("=", 1) for line in probe.stdout.splitlines() if "=" in line)
        kind = found.get("TYPE") or found.get("PTTYPE") or "an unknown signature"
        if found.get("TYPE") == fs_type:
            return False
        raise DbError(
            f"volume {device} holds {kind}, not {fs_type}: refusing to use or format it "
            f"(wipe it yourself if it is really unused: wipefs -a {device})"
        )
    if probe.returncode != BLKID_NOTHING_FOUND:
        raise DbError(f"volume {device}: blkid failed ({probe.stderr.strip() or probe.returncode})")
    run([f"mkfs.{fs_type}", "-q", "-F", "-m", "0", "-L", MOUNT_DIR, str(device)], timeout=600)
    log.info(
        "volume %s was blank: made a file system on it (%s, label %s)", device, fs_type, MOUNT_DIR
    )
    return True
