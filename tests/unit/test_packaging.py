"""The Debian package's static parts (packaging/debian/), checked without building anything: the
unit parses and says what the HA design needs, the paths agree with the product's, every log
is rotated, the maintainer scripts are valid sh."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from esc.cli.agent_cmd import AGENT_UNIT, LOGS
from esc.config.schema import NodePaths

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "packaging" / "debian"
UNIT = PKG / AGENT_UNIT
BUILD = ROOT / "scripts" / "build-deb"
SCRIPTS = ("postinst", "prerm", "postrm")


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """A systemd unit file as {section: {key: [values]}} (no continuation lines in ours)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if m := re.fullmatch(r"\[([A-Za-z]+)\]", line):
            current = sections.setdefault(m.group(1), {})
            continue
        key, sep, value = line.partition("=")
        assert current is not None and sep and re.fullmatch(r"[A-Za-z]+", key), f"line {n}: {raw}"
        current.setdefault(key, []).append(value)
    return sections


def one(unit: dict[str, dict[str, list[str]]], section: str, key: str) -> str:
    values = unit[section][key]
    assert len(values) == 1, (section, key, values)
    return values[0]


def test_the_agent_unit_says_what_the_ha_design_needs() -> None:
    unit = parse_unit(UNIT.read_text())
    assert set(unit) == {"Unit", "Service", "Install"}
    root = NodePaths(Path("/"))
    assert one(unit, "Unit", "ConditionPathExists") == str(root.config_file)
    assert one(unit, "Unit", "After") == "network-online.target"
    assert one(unit, "Unit", "Wants") == "network-online.target"
    assert one(unit, "Service", "Type") == "notify"
    assert one(unit, "Service", "NotifyAccess") == "main"
    assert one(unit, "Service", "ExecStart") == "/opt/esc-ha/bin/esc-haagent"
    # keepalived, PostgreSQL, ExaBGP and esc-manager are in the agent's cgroup and stop with it
    assert one(unit, "Service", "KillMode") == "control-group"
    assert one(unit, "Service", "Restart") == "on-failure"
    assert int(one(unit, "Service", "RestartSec")) <= 5
    assert int(one(unit, "Service", "WatchdogSec")) >= 60
    assert "User" not in unit["Service"]  # root: VIPs, routes, mounts
    assert one(unit, "Install", "WantedBy") == "multi-user.target"
    assert one(unit, "Install", "Alias") == "esc_service.service"  # `service esc_service status`


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    # The real ExecStart exists only once the package is installed: point it at a stand-in.
    text = re.sub(r"(?m)^ExecStart=.*$", "ExecStart=/bin/true", UNIT.read_text())
    copy = tmp_path / AGENT_UNIT
    copy.write_text(text)
    res = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(copy)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert res.returncode == 0 and not (res.stdout + res.stderr).strip(), res


def test_the_package_puts_the_paths_where_the_product_and_the_guide_look() -> None:
    script = BUILD.read_text()
    state = NodePaths(Path("/")).state_file
    assert f'ln -s {state} "$root/opt/cisco/esc/keepalived_state"' in script
    assert "prefix=/opt/esc-ha" in script
    for name, where in (
        ("escadm", "usr/bin"),
        ("esc-haagent", "usr/sbin"),
        ("esc-manager", "usr/sbin"),
    ):
        assert f'ln -s "$prefix/bin/{name}" "$root/{where}/{name}"' in script
    assert f'"$root/lib/systemd/system/{AGENT_UNIT}"' in script


def test_every_log_is_rotated_by_copytruncate() -> None:
    text = (PKG / "esc-ha.logrotate").read_text()
    paths = [ln.strip() for ln in text.splitlines() if ln.startswith("/")]
    log_dir = NodePaths(Path("/")).log_dir
    # exabgp.log too: ExaBGP writes to its stdout (it runs unprivileged and could not rotate
    # files in the log directory)
    expected = [str(log_dir / f) for f in LOGS.values()]
    assert sorted(p for p in paths if "*" not in p) == sorted(expected)
    assert str(log_dir / "*.stdout") in paths  # esc-manager's stdout (agent/service.py)
    assert re.search(r"(?m)^\s*copytruncate$", text)  # the writers keep their files open
    assert (PKG / "conffiles").read_text().split() == ["/etc/logrotate.d/esc-ha"]


@pytest.mark.parametrize("name", SCRIPTS)
def test_maintainer_scripts_are_valid_sh(name: str) -> None:
    path = PKG / name
    assert path.stat().st_mode & 0o111, f"{name} is not executable"
    text = path.read_text()
    assert text.startswith("#!/bin/sh\n") and "\nset -e\n" in text
    subprocess.run(["sh", "-n", str(path)], check=True, timeout=10)


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="no shellcheck")
def test_shell_scripts_are_shellcheck_clean() -> None:
    files = [str(BUILD), *(str(PKG / s) for s in SCRIPTS)]
    res = subprocess.run(["shellcheck", *files], capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stdout


def test_purge_never_deletes_the_database_or_the_config() -> None:
    text = (PKG / "postrm").read_text()
    for kept in ("/var/lib/esc", "/etc/esc"):
        assert not re.search(rf"rm -[a-z]*r[a-z]* [^\n]*{kept}\b", text), kept
        assert kept in text  # ... but says where it is


# --- the maintainer scripts, run against a fake root ($DPKG_ROOT) with stub tools ----------

STUB = """#!/bin/sh
echo "$(basename "$0") $*" >> "$STUB_LOG"
case "$(basename "$0") $1" in
    "pg_ctlcluster 15") exit 3 ;;  # status: the cluster is not running
esac
exit 0
"""
TOOLS = ("systemctl", "deb-systemd-helper", "deb-systemd-invoke", "pg_ctlcluster")


def run_script(tmp_path: Path, name: str, *args: str, systemd: bool) -> tuple[list[str], str]:
    """Run a maintainer script with DPKG_ROOT=tmp_path/root; the tool calls it made, its
    output."""
    root = tmp_path / "root"
    stubs = tmp_path / "stubs"
    stubs.mkdir(exist_ok=True)
    for tool in TOOLS:
        (stubs / tool).write_text(STUB)
        (stubs / tool).chmod(0o755)
    run_dir = root / "run/systemd/system"
    if systemd:
        run_dir.mkdir(parents=True, exist_ok=True)
    elif run_dir.exists():
        run_dir.rmdir()
    log = tmp_path / "calls.log"
    log.write_text("")
    env = {"PATH": f"{stubs}:/usr/bin:/bin", "DPKG_ROOT": str(root), "STUB_LOG": str(log)}
    res = subprocess.run(
        ["sh", str(PKG / name), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert res.returncode == 0, res
    return log.read_text().splitlines(), res.stdout + res.stderr


@pytest.fixture
def debian_root(tmp_path: Path) -> Path:
    """Debian's own 15/main cluster, set to start at boot, with its data."""
    root = tmp_path / "root"
    conf = root / "etc/postgresql/15/main/start.conf"
    conf.parent.mkdir(parents=True)
    conf.write_text("# Automatic startup control\n\nauto\n")
    (root / "var/lib/esc/pgdata").mkdir(parents=True)
    (root / "etc/esc").mkdir(parents=True)
    (root / "etc/esc/esc.toml").write_text("[ha]\n")
    (root / "etc/logrotate.d").mkdir(parents=True)
    (root / "etc/logrotate.d/esc-ha").write_text("")
    return root


def test_postinst_without_systemd_only_changes_files(tmp_path: Path, debian_root: Path) -> None:
    calls, out = run_script(tmp_path, "postinst", "configure", "", systemd=False)
    root_opt = f"--root={debian_root}"
    assert f"systemctl {root_opt} --no-reload disable keepalived.service" in calls
    assert f"systemctl {root_opt} --no-reload disable exabgp.service" in calls
    assert "deb-systemd-helper enable esc-haagent.service" in calls
    assert not [c for c in calls if re.search(r"\b(start|stop|try-restart|daemon-reload)\b", c)]
    start_conf = debian_root / "etc/postgresql/15/main/start.conf"
    assert start_conf.read_text() == "# Automatic startup control\n\nmanual\n"
    assert "set to start manually" in out
    # idempotent: a second run finds nothing to change
    _, again = run_script(tmp_path, "postinst", "configure", "", systemd=False)
    assert "set to start manually" not in again
    assert start_conf.read_text().endswith("\nmanual\n")


def test_postinst_with_systemd_retires_debians_units_and_starts_or_restarts_the_agent(
    tmp_path: Path, debian_root: Path
) -> None:
    calls, _ = run_script(tmp_path, "postinst", "configure", "", systemd=True)
    units = ("keepalived.service", "exabgp.service", "etcd.service", "postgresql@15-main.service")
    for unit in units:
        assert f"systemctl stop {unit}" in calls
    assert not [c for c in calls if "mask" in c and "unmask" not in c]  # never masked
    assert "systemctl --system daemon-reload" in calls
    assert calls[-1] == "deb-systemd-invoke start esc-haagent.service"
    upgrade, _ = run_script(tmp_path, "postinst", "configure", "0.1.0+git1.abc", systemd=True)
    assert upgrade[-1] == "deb-systemd-invoke try-restart esc-haagent.service"
    assert not [c for c in upgrade if c.endswith(" start esc-haagent.service")]


def test_prerm_stops_the_agent_on_remove_only(tmp_path: Path, debian_root: Path) -> None:
    calls, _ = run_script(tmp_path, "prerm", "remove", systemd=True)
    assert calls == ["deb-systemd-invoke stop esc-haagent.service"]
    assert run_script(tmp_path, "prerm", "upgrade", "0.2", systemd=True)[0] == []
    assert run_script(tmp_path, "prerm", "remove", systemd=False)[0] == []


def test_purge_keeps_the_data_and_the_config_and_says_where(
    tmp_path: Path, debian_root: Path
) -> None:
    calls, out = run_script(tmp_path, "postrm", "purge", systemd=False)
    assert "deb-systemd-helper purge esc-haagent.service" in calls
    assert not (debian_root / "etc/logrotate.d/esc-ha").exists()
    assert (debian_root / "var/lib/esc/pgdata").is_dir()
    assert (debian_root / "etc/esc/esc.toml").is_file()
    assert f"kept {debian_root}/var/lib/esc" in out and f"rm -rf {debian_root}/etc/esc" in out
