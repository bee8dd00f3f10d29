"""esc.files: the one atomic write (no symlink followed, whole or nothing, durable) and the
no-follow read, in a tmp directory standing for a directory another user owns."""

from __future__ import annotations

import errno
import os
import pwd
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from esc import files
from esc.config.schema import EscConfig, load_config, save_config
from esc.files import read_nofollow, stamp, write_all, write_atomic

VICTIM_TEXT = "root:secret-hash:19000:0:99999:7:::\n"


def _victim(tmp_path: Path) -> Path:
    """A file outside the directory written to, standing for /etc/shadow."""
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / "shadow"
    victim.write_text(VICTIM_TEXT)
    victim.chmod(0o600)
    return victim


def _unchanged(victim: Path, owner: int) -> None:
    st = victim.lstat()
    assert victim.read_text() == VICTIM_TEXT
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (owner, 0o600)


def test_replaces_whole_with_the_exact_mode_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "d" / "esc.toml"
    write_atomic(target, "one\n", mode=0o600)
    write_atomic(target, b"two\n", mode=0o640)
    assert target.read_text() == "two\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640  # exact: not subject to the umask
    assert [p.name for p in target.parent.iterdir()] == ["esc.toml"]


def test_a_symlink_planted_at_the_target_is_replaced_not_followed(tmp_path: Path) -> None:
    victim = _victim(tmp_path)
    d = tmp_path / "pgdata"
    d.mkdir()
    (d / "pg_hba.conf").symlink_to(victim)
    write_atomic(d / "pg_hba.conf", "local all postgres peer map=esc\n")
    _unchanged(victim, os.getuid())
    assert not (d / "pg_hba.conf").is_symlink()
    assert (d / "pg_hba.conf").read_text() == "local all postgres peer map=esc\n"


def test_symlinks_at_the_old_fixed_temp_names_are_never_touched(tmp_path: Path) -> None:
    """The names the old code used (`.pg_hba.conf.esc.tmp`, `.esc.toml.<pid>.tmp`), opened
    with O_CREAT|O_TRUNC and chowned by path: root wrote through the link and handed the file
    over. Now they are not used at all."""
    victim = _victim(tmp_path)
    d = tmp_path / "pgdata"
    d.mkdir()
    for name in (".pg_hba.conf.esc.tmp", f".pg_hba.conf.{os.getpid()}.tmp"):
        (d / name).symlink_to(victim)
    write_atomic(d / "pg_hba.conf", "x\n")
    _unchanged(victim, os.getuid())
    assert (d / ".pg_hba.conf.esc.tmp").is_symlink()  # left as planted, never followed


def test_a_symlink_planted_at_the_random_name_is_refused_and_another_name_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """O_EXCL|O_NOFOLLOW: even a guessed temporary name does not redirect the write."""
    victim = _victim(tmp_path)
    d = tmp_path / "pgdata"
    d.mkdir()
    guessed = ".pg_hba.conf.guessed.tmp"
    (d / guessed).symlink_to(victim)
    names = iter([guessed, guessed, ".pg_hba.conf.fresh.tmp"])
    monkeypatch.setattr(files, "_temp_name", lambda _name: next(names))
    write_atomic(d / "pg_hba.conf", "x\n")
    _unchanged(victim, os.getuid())
    assert (d / "pg_hba.conf").read_text() == "x\n"
    assert sorted(p.name for p in d.iterdir()) == [guessed, "pg_hba.conf"]


def test_a_new_file_only_is_never_put_over_what_is_there(tmp_path: Path) -> None:
    """replace=False (the diverged-WAL dumps): an earlier file or a planted symlink at the
    name makes it fail, both left as they were, and no temporary file stays behind."""
    victim = _victim(tmp_path)
    d = tmp_path / "diverged"
    d.mkdir()
    write_atomic(d / "dump.txt", "first\n", 0o600, replace=False)
    assert (d / "dump.txt").read_text() == "first\n"
    assert stat.S_IMODE((d / "dump.txt").stat().st_mode) == 0o600
    with pytest.raises(FileExistsError):
        write_atomic(d / "dump.txt", "second\n", replace=False)
    assert (d / "dump.txt").read_text() == "first\n"
    (d / "linked.txt").symlink_to(victim)
    with pytest.raises(FileExistsError):
        write_atomic(d / "linked.txt", "x\n", replace=False)
    _unchanged(victim, os.getuid())
    assert (d / "linked.txt").is_symlink()
    assert sorted(p.name for p in d.iterdir()) == ["dump.txt", "linked.txt"]


@pytest.mark.skipif(os.geteuid() != 0, reason="handing a file to another user needs root")
def test_root_hands_over_only_its_own_new_file(tmp_path: Path) -> None:
    """The owner is set on the descriptor (fchown): with a symlink planted at the target,
    the new file belongs to the other user and the file the link named stays root's."""
    nobody = pwd.getpwnam("nobody")
    victim = _victim(tmp_path)
    d = tmp_path / "pgdata"
    d.mkdir()
    os.chown(d, nobody.pw_uid, nobody.pw_gid)  # the directory is the other user's
    (d / "pg_hba.conf").symlink_to(victim)
    write_atomic(d / "pg_hba.conf", "x\n", 0o600, owner=(nobody.pw_uid, nobody.pw_gid))
    _unchanged(victim, 0)
    st = (d / "pg_hba.conf").lstat()
    assert stat.S_ISREG(st.st_mode) and st.st_uid == nobody.pw_uid


def test_short_writes_are_continued_and_a_zero_write_is_an_error() -> None:
    out: list[bytes] = []

    def three_at_a_time(_fd: int, data: memoryview) -> int:
        out.append(bytes(data[:3]))
        return min(3, len(data))

    write_all(7, b"0123456789", write=three_at_a_time)
    assert b"".join(out) == b"0123456789"
    with pytest.raises(OSError, match="short write"):
        write_all(7, b"abc", write=lambda _fd, _data: 0)


_FAILING_WRITE = """
import resource, signal, sys
from pathlib import Path
from esc.config.schema import parse_config, save_config
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of the signal
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))  # the disk is full after 4 KiB
cfg = parse_config({"agent": {"peer_secret": "x" * 20000}})
try:
    save_config(cfg, Path(sys.argv[1]))
except OSError as exc:
    print(exc.errno)
    sys.exit(3)
"""


def test_a_write_that_fails_half_way_leaves_the_old_config_intact(tmp_path: Path) -> None:
    """A real short write followed by EFBIG (a file size limit standing for a full disk), in
    a child process: the good esc.toml is untouched and no temporary file is left behind."""
    path = tmp_path / "esc.toml"
    save_config(EscConfig(), path)
    before = path.read_bytes()
    res = subprocess.run(
        [sys.executable, "-c", _FAILING_WRITE, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert res.returncode == 3, res.stderr
    assert res.stdout.strip() == str(errno.EFBIG)
    assert path.read_bytes() == before
    load_config(path)  # still a valid config
    assert [p.name for p in tmp_path.iterdir()] == ["esc.toml"]


def test_the_file_and_then_its_directory_are_fsynced_after_the_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[str, str | None]] = []
    real = os.fsync

    def recording(fd: int) -> None:
        kind = "dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"
        target = tmp_path / "state"
        seen.append((kind, target.read_text() if target.exists() else None))
        real(fd)

    monkeypatch.setattr(os, "fsync", recording)
    write_atomic(tmp_path / "state", "MASTER\n")
    # the data is synced before it has the name; the directory after (the rename is durable)
    assert seen == [("file", None), ("dir", "MASTER\n")]


def test_read_nofollow_refuses_a_symlink_and_what_is_not_a_file(tmp_path: Path) -> None:
    victim = _victim(tmp_path)
    (tmp_path / "postmaster.pid").write_text("123\n")
    assert read_nofollow(tmp_path / "postmaster.pid") == "123\n"
    (tmp_path / "link").symlink_to(victim)
    with pytest.raises(OSError) as info:
        read_nofollow(tmp_path / "link")
    assert info.value.errno == errno.ELOOP
    os.mkfifo(tmp_path / "fifo")  # would block a plain open() for read forever
    with pytest.raises(OSError, match="not a regular file"):
        read_nofollow(tmp_path / "fifo")
    (tmp_path / "big").write_text("x" * 101)
    with pytest.raises(OSError, match="over 100 bytes"):
        read_nofollow(tmp_path / "big", limit=100)  # refused, never read truncated
    assert read_nofollow(tmp_path / "big", limit=101) == "x" * 101


@pytest.mark.parametrize("name", ["keepalived_state", "agent_memory.json", "lab.json"])
def test_a_short_write_then_enospc_leaves_the_old_file_and_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """The state file, the memory, the lab's record (all write_atomic): the first write is
    short (continued), the next fails with ENOSPC: the old file is intact, nothing left."""
    path = tmp_path / name
    write_atomic(path, "old content\n")
    calls: list[int] = []

    def short_then_full(fd: int, data: memoryview) -> int:
        calls.append(len(data))
        if len(calls) == 1:
            return os.write(fd, data[:3])
        raise OSError(errno.ENOSPC, "No space left on device")

    real = files.write_all
    monkeypatch.setattr(files, "write_all", lambda fd, data: real(fd, data, short_then_full))
    with pytest.raises(OSError) as info:
        write_atomic(path, "new content, longer\n")
    assert info.value.errno == errno.ENOSPC
    assert calls == [20, 17]  # the short write was continued, not taken for the end
    assert path.read_text() == "old content\n"
    assert [p.name for p in tmp_path.iterdir()] == [name]


def test_a_stamp_changes_when_a_file_is_replaced_and_is_none_while_one_is_missing(
    tmp_path: Path,
) -> None:
    a, b = tmp_path / "a.crt", tmp_path / "a.key"
    write_atomic(a, "cert 1")
    write_atomic(b, "key 1")
    first = stamp(a, b)
    assert first is not None and stamp(a, b) == first
    write_atomic(b, "key 1")  # the same bytes, replaced (a rotation): a new inode
    assert stamp(a, b) != first
    b.unlink()
    assert stamp(a, b) is None
