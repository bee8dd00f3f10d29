"""Files written and read by root where someone else may own the directory.

:func:`write_atomic` is the project's one way to replace a file (config, state, memory, the
files PostgreSQL reads). What it guarantees:

- **Atomic.** The new content goes to a temporary file in the same directory, is written
  whole (a short write is continued, never taken for the end), ``fsync``-ed, then renamed over
  the target, and the directory is ``fsync``-ed so the rename survives a power cut. Any failure
  removes the temporary file and leaves the old target byte-for-byte as it was.
- **No symlink is ever followed.** The temporary name is random and created with
  ``O_CREAT | O_EXCL | O_NOFOLLOW``: a name planted beforehand (a symlink to ``/etc/shadow``,
  say) makes the create fail instead of writing through it, and a fresh name is tried. The
  owner is set with ``fchown`` on the open descriptor, never by path. ``rename`` replaces a
  symlink at the target instead of following it. Every step works relative to one descriptor
  of the directory, so a path component swapped in between cannot redirect a later step.

This is what makes it safe for root to write inside a directory owned by a less privileged
user (PostgreSQL's data directory is owned by ``postgres``): that user can still rename or
remove the files in its own directory, but it can no longer make root write to, truncate or
hand over a file elsewhere.

:func:`read_nofollow` reads such a file without following a symlink in its last component.

:func:`open_append` opens a file that only grows (a log, a child's stdout, the history) the
same way: never through a symlink, a new file created ``LOG_MODE`` (0640: logs name addresses,
users and errors, not for every local account), an older one with wider permissions narrowed
to it. :class:`LogFile` is the ``logging`` handler on such a file.
"""

from __future__ import annotations

import contextlib
import errno
import io
import logging
import os
import secrets
import stat
from collections.abc import Callable
from pathlib import Path

_TEMP_TRIES = 8
LOG_MODE = 0o640  # every log under <log> (open_append)
READ_LIMIT = 1 << 20  # read_nofollow: a file root reads from someone else's directory


def write_all(fd: int, data: bytes, write: Callable[[int, memoryview], int] = os.write) -> None:
    """Write all of ``data``: ``write`` may write less than asked (a signal, a full disk just
    before ENOSPC); the rest is written again. A write of 0 bytes is an error, not the end."""
    view = memoryview(data)
    while view:
        n = write(fd, view)
        if n <= 0:
            raise OSError(f"short write: {len(view)} bytes not written")
        view = view[n:]


def _temp_name(name: str) -> str:
    return f".{name}.{secrets.token_hex(8)}.tmp"


def _create_temp(dir_fd: int, name: str) -> tuple[str, int]:
    """A new file of a random name in ``dir_fd``; never an existing name or a symlink."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    for _ in range(_TEMP_TRIES):
        tmp = _temp_name(name)
        try:
            return tmp, os.open(tmp, flags, 0o600, dir_fd=dir_fd)
        except FileExistsError:
            continue  # planted (or a one in 2**64 collision): another name
    raise FileExistsError(f"could not create a temporary file for {name} ({_TEMP_TRIES} tries)")


def write_atomic(
    path: Path,
    text: str | bytes,
    mode: int = 0o644,
    *,
    owner: tuple[int, int] | None = None,
    replace: bool = True,
) -> None:
    """Replace ``path`` with ``text`` atomically (module docstring). ``mode`` is exact (not
    subject to the umask); ``owner`` is a ``(uid, gid)`` given to the file before it appears
    under its name, so a reader such as PostgreSQL never sees a file it cannot read.
    ``replace`` False: a new file only; if anything (a symlink included) is at ``path``
    already, FileExistsError and nothing changes (``link`` neither follows nor replaces)."""
    data = text.encode() if isinstance(text, str) else text
    path.parent.mkdir(parents=True, exist_ok=True)
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        tmp, fd = _create_temp(dir_fd, path.name)
        try:
            try:
                if owner is not None:
                    os.fchown(fd, *owner)
                os.fchmod(fd, mode)
                write_all(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            if replace:
                os.rename(tmp, path.name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            else:
                os.link(tmp, path.name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
                os.unlink(tmp, dir_fd=dir_fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=dir_fd)
            raise
        try:
            os.fsync(dir_fd)  # the rename itself is durable only once the directory is
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.ENOTSUP):  # a file system without it
                raise
    finally:
        os.close(dir_fd)


def stamp(*paths: Path) -> tuple[int, ...] | None:
    """What changes when any of ``paths`` is rewritten or replaced (its mtime, inode and size):
    a reader of certificates compares two to know it must load them again. None if one is
    missing (mid-replacement: look again later)."""
    out: list[int] = []
    for p in paths:
        try:
            st = p.stat()
        except OSError:
            return None
        out += [st.st_mtime_ns, st.st_ino, st.st_size]
    return tuple(out)


def read_nofollow(path: Path, limit: int = READ_LIMIT) -> str:
    """The text of ``path``, refusing a symlink as its last component (``OSError`` ELOOP),
    anything but a regular file, and a file over ``limit`` bytes (never a truncated text)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        if not _is_regular(fd):
            raise OSError(f"{path}: not a regular file")
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    if size > limit:
        raise OSError(errno.EFBIG, f"{path}: over {limit} bytes")
    return b"".join(chunks).decode(errors="replace")


def _is_regular(fd: int) -> bool:
    return stat.S_ISREG(os.fstat(fd).st_mode)


def open_append(path: Path, mode: int = LOG_MODE) -> int:
    """A descriptor appending to ``path`` (module docstring): created with ``mode`` exactly (not
    subject to the umask); an existing file keeps its owner, and loses any permission bit
    beyond ``mode``; a symlink or anything but a regular file is refused (``OSError``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    fd = os.open(path, flags, mode)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(f"{path}: not a regular file")
        os.set_blocking(fd, True)  # (O_NONBLOCK only so that a planted FIFO cannot hang us)
        if stat.S_IMODE(st.st_mode) != mode:
            os.fchmod(fd, stat.S_IMODE(st.st_mode) & mode)
    except BaseException:
        os.close(fd)
        raise
    return fd


class LogFile(logging.FileHandler):
    """``logging.FileHandler`` opening its file with :func:`open_append` (0640, no symlink)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, encoding="utf-8")

    def _open(self) -> io.TextIOWrapper:
        return os.fdopen(open_append(Path(self.baseFilename)), "a", encoding=self.encoding)
