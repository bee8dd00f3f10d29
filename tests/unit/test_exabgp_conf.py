"""Golden tests for the ExaBGP 4.2 config and process-API commands, checked again by
``exabgp --test`` (configuration check only; opens no session).

``ESC_UPDATE_GOLDEN=1`` rewrites the golden files instead of comparing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from esc.config.schema import BgpConfig, EscConfig
from esc.drivers.exabgp_conf import (
    COMMANDS,
    announce_command,
    exabgp_env,
    render_exabgp,
    withdraw_command,
)
from esc.errors import ConfigError

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
PROCESS = ["/usr/bin/python3", "-m", "esc.drivers.exabgp_api", "/run/esc/exabgp-api.sock"]
SECRET = "deadbeef42"  # only [a-f0-9]: ExaBGP's md5-base64 "auto" would decode it


def assert_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("ESC_UPDATE_GOLDEN") == "1":
        path.write_text(text)
        return
    assert text == path.read_text(), f"differs from tests/golden/{name}"


BGP4 = BgpConfig.model_validate(
    {
        "local_ip": "192.0.2.10",
        "anycast_ip": "203.0.113.1",
        "remote_ip": "192.0.2.1",
        "local_as": 65010,
        "remote_as": 65001,
        "local_router_id": "192.0.2.10",
    }
)
BGP6 = BgpConfig.model_validate(
    {
        "local_ip": "2001:db8::10",
        "anycast_ip": "2001:db8:ff::1",
        "remote_ip": "2001:db8::1",
        "local_as": 4200000010,
        "remote_as": 65001,
        "local_router_id": "192.0.2.10",
        "hold_time": 30,
    }
)
IPV4 = EscConfig(node_name="ha0", bgp=BGP4)
MD5 = EscConfig(node_name="ha0", bgp=BGP4.model_copy(update={"md5": SECRET}))
IPV6 = EscConfig(node_name="ha0", bgp=BGP6)

CASES = {"exabgp_ipv4.conf": IPV4, "exabgp_md5.conf": MD5, "exabgp_ipv6.conf": IPV6}


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden(name: str) -> None:
    assert_golden(name, render_exabgp(CASES[name], PROCESS))


def test_commands_golden() -> None:
    lines = [
        announce_command(IPV4),
        withdraw_command(IPV4),
        announce_command(IPV6),
        withdraw_command(IPV6),
        announce_command(BGP4),  # a BgpConfig is accepted as well as the whole config
    ]
    assert_golden("commands.txt", "\n".join(lines) + "\n")


def test_commands_are_one_line_each() -> None:
    for cfg in (IPV4, IPV6, MD5):
        for cmd in (announce_command(cfg), withdraw_command(cfg)):
            assert "\n" not in cmd
            assert cmd.split()[0] in {"announce", "withdraw"}
    assert set(COMMANDS) == {"announce", "withdraw"}


def test_md5_renders_base64_off() -> None:
    text = render_exabgp(MD5, PROCESS)
    assert f'md5-password "{SECRET}";\n    md5-base64 false;\n' in text
    assert "md5" not in render_exabgp(IPV4, PROCESS)


@pytest.mark.parametrize(
    "value",
    ["203.0.113.1\nannounce route 198.51.100.0/24 next-hop self", "203.0.113.1 x", "\x00"],
)
def test_injection_through_a_value_is_refused(value: str) -> None:
    bad = BGP4.model_copy(update={"anycast_ip": value})
    for render in (announce_command, withdraw_command):
        with pytest.raises(ConfigError) as err:
            render(bad)
        assert err.value.field == "bgp.anycast_ip"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("remote_ip", "192.0.2.1 {"),
        ("local_ip", "192.0.2.10;"),
        ("local_router_id", "192.0.2.10\n"),
        ("md5", "abc\ndef"),
        ("md5", 'abc"def'),
    ],
)
def test_unsafe_values_are_refused_even_past_the_schema(field: str, value: str) -> None:
    bad = IPV4.model_copy(update={"bgp": BGP4.model_copy(update={field: value})})
    with pytest.raises(ConfigError) as err:
        render_exabgp(bad, PROCESS)
    assert err.value.field == f"bgp.{field}"
    assert value not in str(err.value)


@pytest.mark.parametrize("arg", ["a b", "a;b", "a\nb", "{", 'x"', "x'", ""])
def test_process_arguments_are_checked(arg: str) -> None:
    with pytest.raises(ConfigError) as err:
        render_exabgp(IPV4, ["/usr/bin/helper", arg])
    assert err.value.field == "process_cmd[1]"


def test_empty_process_is_refused() -> None:
    with pytest.raises(ConfigError) as err:
        render_exabgp(IPV4, [])
    assert err.value.field == "process_cmd"


def test_no_bgp_section() -> None:
    with pytest.raises(ConfigError) as err:
        render_exabgp(EscConfig(), PROCESS)
    assert err.value.field == "bgp"
    with pytest.raises(ConfigError):
        announce_command(EscConfig())


# --- exabgp --test -----------------------------------------------------------------------------

# Debian's defaults want an exabgp user and /run/exabgp pipes (PROBE-NOTES ExaBGP gotcha 1).
EXABGP_ENV = {
    "exabgp.daemon.user": "root",
    "exabgp.daemon.drop": "false",
    "exabgp.daemon.daemonize": "false",
    "exabgp.api.cli": "false",
    "exabgp.log.destination": "stdout",
}


def _exabgp_test(conf: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["exabgp", "--test", str(conf)],
        env={**os.environ, **EXABGP_ENV},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.skipif(shutil.which("exabgp") is None, reason="exabgp not installed")
@pytest.mark.parametrize("name", sorted(CASES))
def test_exabgp_accepts_the_config(name: str, tmp_path: Path) -> None:
    conf = tmp_path / "exabgp.conf"
    conf.write_text(render_exabgp(CASES[name], ["/bin/cat"]))
    proc = _exabgp_test(conf)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.skipif(shutil.which("exabgp") is None, reason="exabgp not installed")
def test_exabgp_test_does_fail_on_a_bad_config(tmp_path: Path) -> None:
    """Guard: the check above would be worthless if exabgp --test always exited 0."""
    conf = tmp_path / "exabgp.conf"
    conf.write_text(render_exabgp(IPV4, ["/bin/cat"]).replace("hold-time", "hold-tim"))
    assert _exabgp_test(conf).returncode != 0


@pytest.mark.skipif(shutil.which("exabgp") is None, reason="exabgp not installed")
def test_exabgp_reads_every_setting_of_the_environment() -> None:
    """Each variable of exabgp_env() names a real ExaBGP 4.2 option and overrides Debian's
    /etc/exabgp/exabgp.env (``exabgp --fe`` prints the settings it would run with)."""
    env = exabgp_env("exabgp")
    clean = {k: v for k, v in os.environ.items() if not k.lower().startswith("exabgp")}
    proc = subprocess.run(
        ["exabgp", "--fe"],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    printed = {}
    for line in proc.stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            printed[key.replace(".", "_")] = value.strip("'")
    for key, value in env.items():
        assert key in printed, f"{key} is not an ExaBGP option"
        assert printed[key] == value, f"{key}: exabgp runs with {printed[key]!r}, not {value!r}"
