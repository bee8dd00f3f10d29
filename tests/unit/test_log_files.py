"""Logs and records 0640 (issue 15): every log under <log> is created 0640 whatever the umask
(the agent's log handler, its children's output, the history), an older, wider one is
narrowed, none is opened through a symlink; the lab's record, which holds the lab API's admin
password, is 0600."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from esc.agent.history import KEEP, History
from esc.agent.main import setup_logging
from esc.config.schema import NodePaths
from esc.drivers.proc import Child
from esc.files import LOG_MODE, LogFile, open_append
from esclab.lab_state import LabState


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@pytest.fixture
def umask_0() -> Iterator[None]:
    """The most permissive umask: a mode that depended on it would show as 0666/0644."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def test_open_append_creates_0640_narrows_a_wider_file_and_keeps_a_narrower(
    tmp_path: Path, umask_0: None
) -> None:
    os.close(open_append(tmp_path / "new.log"))
    assert _mode(tmp_path / "new.log") == LOG_MODE == 0o640
    wide = tmp_path / "old.log"
    wide.write_text("kept\n")
    wide.chmod(0o666)
    fd = open_append(wide)
    os.write(fd, b"added\n")
    os.close(fd)
    assert _mode(wide) == 0o640 and wide.read_text() == "kept\nadded\n"  # appended, not truncated
    narrow = tmp_path / "narrow.log"
    narrow.touch(mode=0o600)
    os.close(open_append(narrow))
    assert _mode(narrow) == 0o600


def test_open_append_refuses_a_symlink_and_a_fifo(tmp_path: Path) -> None:
    victim = tmp_path / "shadow"
    victim.write_text("secret\n")
    victim.chmod(0o600)
    (tmp_path / "agent.log").symlink_to(victim)
    with pytest.raises(OSError):
        os.close(open_append(tmp_path / "agent.log"))
    assert victim.read_text() == "secret\n" and _mode(victim) == 0o600
    os.mkfifo(tmp_path / "fifo.log")
    with pytest.raises(OSError):  # refused at once: no reader needed, no hang
        os.close(open_append(tmp_path / "fifo.log"))


def test_the_agents_log_handler_creates_its_file_0640(tmp_path: Path, umask_0: None) -> None:
    paths = NodePaths(tmp_path)
    root = logging.getLogger()
    before = list(root.handlers)
    level = root.level
    try:
        setup_logging(paths)
        added = [h for h in root.handlers if h not in before]
        assert len(added) == 1 and isinstance(added[0], LogFile)
        logging.getLogger("esc.agent").warning("a line")
        added[0].flush()
    finally:
        for h in root.handlers[:]:
            if h not in before:
                root.removeHandler(h)
                h.close()
        root.setLevel(level)
    log = paths.log_dir / "esc_haagent.log"
    assert _mode(log) == 0o640 and "a line" in log.read_text()


def test_a_childs_output_file_is_0640(tmp_path: Path, umask_0: None) -> None:
    """keepalived's, etcd's and esc-manager's output (esc.drivers.proc.Child)."""
    out = tmp_path / "log" / "keepalived.log"
    child = Child("echo", ["echo", "started"], out)
    child.start()
    assert child.proc is not None
    child.proc.wait(10)
    child.stop()
    assert _mode(out) == 0o640 and out.read_text() == "started\n"


def test_the_history_is_0640_appended_and_rewritten(tmp_path: Path, umask_0: None) -> None:
    path = tmp_path / "history.jsonl"
    h = History(path)
    h.add("STOP", "SWITCHING", "start")
    assert _mode(path) == 0o640
    for i in range(KEEP + KEEP // 10):  # past the bound: rewritten whole (write_atomic)
        h.add("BACKUP", "BACKUP", f"n{i}")
    assert _mode(path) == 0o640
    assert len(path.read_text().splitlines()) <= KEEP + KEEP // 10


def test_the_lab_record_holding_the_admin_password_is_0600(tmp_path: Path, umask_0: None) -> None:
    lab = LabState(tmp_path)
    lab.write_state(api={"user": "admin", "password": "not-for-others"})
    assert _mode(lab.state_file) == 0o600
    lab.write_state(status="up")  # each write replaces it atomically, 0600 again
    assert _mode(lab.state_file) == 0o600
    assert lab.read_state()["api"]["password"] == "not-for-others"
    assert [p.name for p in tmp_path.iterdir()] == ["lab.json"]  # no temporary file left
