"""esc.drivers.proc: the one runner of commands (its options), the streaming runner and the
one liveness check of a PID (a zombie is not alive)."""

from __future__ import annotations

import os
import pwd
import subprocess
import time
from pathlib import Path
from typing import IO

import pytest

from esc.drivers.proc import as_user, parse_proc_stat, pid_is_live, run, run_streaming
from esc.errors import CommandError


def test_ok_codes_decide_which_exits_are_failures() -> None:
    assert run(["sh", "-c", "echo out; exit 1"], ok_codes=(0, 1)).returncode == 1
    with pytest.raises(CommandError, match="exited 1: err") as caught:
        run(["sh", "-c", "echo err >&2; exit 1"])
    assert caught.value.returncode == 1
    assert run(["sh", "-c", "exit 3"], check=False).returncode == 3


def test_env_is_the_whole_environment_and_cwd_is_where_it_runs(tmp_path: Path) -> None:
    script = 'echo "${ESC_TEST_VAR:-unset} ${HOME:-nohome}"; pwd'
    out = run(["/bin/sh", "-c", script], env={"ESC_TEST_VAR": "given"}, cwd=str(tmp_path))
    assert out.stdout.splitlines() == ["given nohome", str(tmp_path)]


def test_stdin_is_closed_unless_input_is_given() -> None:
    assert run(["cat"], timeout=5).stdout == ""
    assert run(["cat"], input_="fed\n").stdout == "fed\n"


def test_a_missing_program_and_a_timeout_are_command_errors() -> None:
    with pytest.raises(CommandError) as missing:
        run(["/nonexistent/esc-tool"])
    assert missing.value.returncode == 127
    started = time.monotonic()
    with pytest.raises(CommandError, match="timed out after 0 s") as slow:
        run(["sleep", "5"], timeout=0.2)
    assert slow.value.returncode == -1 and time.monotonic() - started < 4


def test_as_user_goes_through_runuser_only_for_another_user() -> None:
    me = pwd.getpwuid(os.geteuid()).pw_name
    assert as_user(["id"], None) == ["id"]
    assert as_user(["id"], me) == ["id"]
    other = "nobody" if me != "nobody" else "root"
    assert as_user(["id", "-u"], other) == ["runuser", "-u", other, "--", "id", "-u"]
    with pytest.raises(CommandError, match="no OS user 'esc-no-such-user'"):
        as_user(["id"], "esc-no-such-user")


@pytest.mark.skipif(os.geteuid() != 0, reason="running as another user needs root")
def test_run_as_another_user() -> None:
    nobody = pwd.getpwnam("nobody")
    assert run(["id", "-u"], user="nobody", cwd="/").stdout.strip() == str(nobody.pw_uid)


def test_run_streaming_hands_stderr_to_the_reader_and_fails_with_what_it_kept() -> None:
    seen: list[bytes] = []

    def reader(stderr: IO[bytes]) -> str:
        seen.append(stderr.read())
        return "kept line"

    run_streaming(["sh", "-c", "echo progress >&2; echo ignored"], reader, timeout=10)
    assert seen == [b"progress\n"]
    with pytest.raises(CommandError, match="exited 3: kept line"):
        run_streaming(["sh", "-c", "exit 3"], reader, timeout=10)
    with pytest.raises(CommandError, match=r"exited -9: exit -9 \(killed after a timeout\?\)"):
        run_streaming(["sleep", "5"], lambda e: e.read().decode(), timeout=0.2)


def test_run_streaming_kills_the_command_when_the_reader_raises() -> None:
    def reader(stderr: IO[bytes]) -> str:
        raise RuntimeError("callback failed")

    started = time.monotonic()
    with pytest.raises(RuntimeError, match="callback failed"):
        run_streaming(["sleep", "5"], reader, timeout=30)
    assert time.monotonic() - started < 4


@pytest.mark.parametrize(
    ("line", "parsed"),
    [
        ("123 (postgres) Z 1 123 123 0", ("postgres", "Z")),
        ("123 (post gres)) S 1", ("post gres)", "S")),
        ("7 (keepalived) R 1 7", ("keepalived", "R")),
        ("8 (x)", ("x", "?")),
    ],
)
def test_proc_stat_name_and_state(line: str, parsed: tuple[str, str]) -> None:
    assert parse_proc_stat(line) == parsed


def test_pid_is_live_for_this_process_and_by_name() -> None:
    name = Path("/proc/self/comm").read_text().strip()
    assert pid_is_live(os.getpid())
    assert pid_is_live(os.getpid(), names=(name,))
    assert not pid_is_live(os.getpid(), names=("esc-no-such",))


def test_a_zombie_and_a_reaped_child_are_not_live() -> None:
    child = subprocess.Popen(["true"])
    deadline = time.monotonic() + 10
    while parse_proc_stat(Path(f"/proc/{child.pid}/stat").read_text())[1] != "Z":
        assert time.monotonic() < deadline, "the child never exited"
        time.sleep(0.01)
    assert not pid_is_live(child.pid)  # exited, not yet reaped
    child.wait()
    assert not pid_is_live(child.pid)  # gone
