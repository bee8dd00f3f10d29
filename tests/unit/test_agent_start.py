"""An agent that cannot start says why (stderr, its log, <run>/agent_error, `escadm status`), and
`escadm reload` starts an agent that is not running, through a fake of the systemd seam."""

from __future__ import annotations

import json
import logging
import shutil
import socketserver
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from statuses import status_dict

from esc.agent import main as agent_main
from esc.agent import setup_error
from esc.agent.api import serve_unix
from esc.cli import agent_cmd
from esc.cli.agent_cmd import AGENT_UNIT, SystemdAgentUnit, run_reload, run_status
from esc.config.schema import NodePaths, dump_config, parse_config

CONFIG = {"ha": {"ha_node_list": ["192.0.2.10", "192.0.2.11"], "kad_vip": "192.0.2.100"}}


@pytest.fixture
def paths() -> Iterator[NodePaths]:
    """A node root short enough for the agent's unix socket (sun_path is 108 bytes)."""
    with tempfile.TemporaryDirectory(prefix="esc", dir="/tmp") as d:
        p = NodePaths(Path(d))
        for sub in p.all_dirs():
            sub.mkdir(parents=True)
        yield p


def _write_config(paths: NodePaths) -> None:
    cfg = {"ha": {**CONFIG["ha"], "kad_vif": "eth0"}}
    paths.config_file.write_text(dump_config(parse_config(cfg)))


@pytest.fixture
def root_logging() -> Iterator[None]:
    """main() adds a file handler to the root logger: take it away again."""
    root = logging.getLogger()
    before = list(root.handlers)
    yield
    for h in root.handlers[:]:
        if h not in before:
            root.removeHandler(h)
            h.close()


# --- the agent's setup error ----------------------------------------------------------------


def test_a_setup_error_goes_to_stderr_the_log_and_the_error_file(
    paths: NodePaths,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    root_logging: None,
) -> None:
    monkeypatch.setenv("ESC_ROOT", str(paths.root))
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert agent_main.main([]) == 2
    err = capsys.readouterr().err
    assert "esc-haagent: " in err and "no such config file" in err
    log = (paths.log_dir / "esc_haagent.log").read_text()
    assert "ERROR esc.agent: not started: " in log and "no such config file" in log
    recorded = setup_error.read(paths)
    assert recorded is not None and recorded.endswith("esc.toml: no such config file")


def test_the_error_file_is_one_line_and_can_be_asked_for_since_a_time(paths: NodePaths) -> None:
    setup_error.record(paths, "ha.kad_vif: no\ninterface eth9")
    assert setup_error.read(paths) == "ha.kad_vif: no interface eth9"
    mtime = setup_error.error_file(paths).stat().st_mtime
    assert setup_error.read(paths, since=mtime + 1) is None
    setup_error.clear(paths)
    assert setup_error.read(paths) is None
    setup_error.clear(paths)  # idempotent


def test_status_shows_the_setup_error_of_an_agent_that_is_not_running(
    paths: NodePaths, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_status(paths, as_json=False) == 3
    assert capsys.readouterr().out == "STOP  (agent not running: state file only)\n"
    setup_error.record(paths, "ha.ha_node_list: this host owns neither 192.0.2.10 nor 192.0.2.11")
    assert run_status(paths, as_json=False) == 3
    assert capsys.readouterr().out == (
        "STOP  (agent not running: ha.ha_node_list: this host owns neither 192.0.2.10 nor "
        "192.0.2.11)\n"
    )
    assert run_status(paths, as_json=True) == 3
    out = json.loads(capsys.readouterr().out)
    assert out["agent"] == "not running" and out["error"].startswith("ha.ha_node_list: ")


# --- escadm reload starts the agent ---------------------------------------------------------


class FakeUnit:
    """The systemd seam. ``start`` runs ``on_start`` (a stand-in for the agent systemd starts)."""

    def __init__(
        self,
        available: bool = True,
        on_start: Any = None,
        start_error: str | None = None,
        failed: bool = False,
    ) -> None:
        self._available = available
        self.on_start = on_start
        self.start_error = start_error
        self._failed = failed
        self.starts = 0

    def available(self) -> bool:
        return self._available

    def active(self) -> bool:
        return False

    def failed(self) -> bool:
        return self._failed

    def start(self) -> str | None:
        self.starts += 1
        if self.start_error is None and self.on_start is not None:
            self.on_start()
        return self.start_error


def _fake_agent(paths: NodePaths, servers: list[socketserver.BaseServer]) -> Any:
    def handle(method: str, path: str, _body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if (method, path) == ("GET", "/status"):
            reason = "cold boot: waiting for peer esc-ha-1"
            return 200, status_dict(state="SWITCHING", role="standby", reason=reason)
        if (method, path) == ("POST", "/reload"):
            return 200, {"ok": True, "message": "reloaded: no generated file changed"}
        return 404, {}

    def start() -> None:
        servers.append(serve_unix(agent_cmd.agent_socket(paths), handle))

    return start


@pytest.fixture
def servers() -> Iterator[list[socketserver.BaseServer]]:
    running: list[socketserver.BaseServer] = []
    yield running
    for srv in running:
        srv.shutdown()
        srv.server_close()


def test_reload_starts_an_agent_that_is_not_running(
    paths: NodePaths,
    capsys: pytest.CaptureFixture[str],
    servers: list[socketserver.BaseServer],
) -> None:
    _write_config(paths)
    setup_error.record(paths, "an old error, from before the config was fixed")
    unit = FakeUnit(on_start=_fake_agent(paths, servers))
    assert run_reload(paths, unit) == 0
    out = capsys.readouterr().out
    assert f"starting it (systemctl enable --now {AGENT_UNIT})" in out
    assert "agent started (enabled at boot): SWITCHING  cold boot: waiting for peer" in out
    assert unit.starts == 1
    # running now: a second reload is an ordinary one
    assert run_reload(paths, unit) == 0
    assert capsys.readouterr().out.strip().endswith("reloaded: no generated file changed")
    assert unit.starts == 1


def test_reload_reports_the_setup_error_of_the_agent_it_started(
    paths: NodePaths, capsys: pytest.CaptureFixture[str]
) -> None:
    _write_config(paths)
    error = "ha.ha_node_list: this host owns neither 192.0.2.10 nor 192.0.2.11"
    unit = FakeUnit(on_start=lambda: setup_error.record(paths, error))
    assert run_reload(paths, unit, deadline_s=10) == 3
    assert f"the agent did not start: {error}" in capsys.readouterr().err


def test_reload_reports_a_failed_unit_and_a_failed_systemctl(
    paths: NodePaths, capsys: pytest.CaptureFixture[str]
) -> None:
    _write_config(paths)
    assert run_reload(paths, FakeUnit(failed=True), deadline_s=10) == 3
    assert f"journalctl -u {AGENT_UNIT}" in capsys.readouterr().err
    missing = "Failed to enable unit: Unit file esc-haagent.service does not exist."
    assert run_reload(paths, FakeUnit(start_error=missing)) == 3
    assert missing in capsys.readouterr().err


def test_reload_gives_up_after_its_deadline(
    paths: NodePaths, capsys: pytest.CaptureFixture[str]
) -> None:
    _write_config(paths)
    assert run_reload(paths, FakeUnit(), deadline_s=0.3) == 3
    assert "did not answer within 0 s" in capsys.readouterr().err


def test_reload_without_systemd_says_how_to_start_the_agent(
    paths: NodePaths, capsys: pytest.CaptureFixture[str]
) -> None:
    _write_config(paths)
    unit = FakeUnit(available=False)
    assert run_reload(paths, unit) == 3
    err = capsys.readouterr().err
    assert "agent not reachable" in err
    assert f"start the agent with: ESC_ROOT={paths.root} setsid esc-haagent" in err
    assert unit.starts == 0


def test_reload_refuses_an_invalid_config_before_starting_anything(paths: NodePaths) -> None:
    paths.config_file.write_text("[ha]\nkad_vip = 1\n")
    unit = FakeUnit()
    assert run_reload(paths, unit) == 2
    assert unit.starts == 0


def test_the_systemd_seam_only_manages_the_root_node(tmp_path: Path) -> None:
    calls: list[list[str]] = []

    def systemctl(args: list[str]) -> tuple[int, str]:
        calls.append(args)
        return 0, ""

    marker = tmp_path / "systemd"
    assert not SystemdAgentUnit(Path("/"), marker, systemctl).available()  # not booted
    marker.mkdir()
    assert not SystemdAgentUnit(tmp_path, marker, systemctl).available()  # another root
    unit = SystemdAgentUnit(Path("/"), marker, systemctl)
    assert unit.start() is None
    assert calls == [["reset-failed", AGENT_UNIT], ["enable", "--now", "--no-block", AGENT_UNIT]]
    assert unit.failed() and unit.active()
    assert unit.available() == (shutil.which("systemctl") is not None)
