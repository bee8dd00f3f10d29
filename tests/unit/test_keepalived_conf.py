"""Golden tests for the keepalived renderer, checked again by ``keepalived -t`` (config test
mode: parses and exits, starts no VRRP), and behaviour tests of the agent-alive check script.

``ESC_UPDATE_GOLDEN=1`` rewrites the golden files instead of comparing.

The ``keepalived -t`` check needs every interface named in the config to exist on this host
(``Non-existent interface specified in configuration`` otherwise, exit 5) and refuses ``lo``.
Interfaces missing here are therefore renamed to interfaces that do exist before the check (the
structure checked is unchanged); if this host has no usable interface the check is skipped.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from ipaddress import ip_address
from pathlib import Path

import pytest

from esc.config.schema import EscConfig, HaConfig, NodePaths
from esc.drivers.keepalived_conf import (
    format_advert_int,
    render_check_script,
    render_keepalived,
)
from esc.errors import ConfigError

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
ROOT = NodePaths(Path("/"))
CHECK = Path("/usr/libexec/esc/esc-agent-alive")


def assert_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("ESC_UPDATE_GOLDEN") == "1":
        path.write_text(text)
        return
    assert text == path.read_text(), f"differs from tests/golden/{name}"


def _cfg(node: str, **ha: object) -> EscConfig:
    return EscConfig(node_name=node, ha=HaConfig.model_validate(ha))


IPV4 = _cfg(
    "ha0",
    ha_node_list=["198.51.100.10", "198.51.100.11"],
    kad_vip="198.51.100.254",
    kad_vif="eth0",
)
IPV4_VIP_ETH2 = _cfg(
    "ha0",
    ha_node_list=["198.51.100.10", "198.51.100.11"],
    kad_vip="192.0.2.254:eth2",
    kad_vif="eth0",
)
IPV6_VIP_OTHER_IFACE = _cfg(
    "ha0",
    ha_node_list=["2001:db8:1::10", "2001:db8:1::11"],
    kad_vip="[2001:db8::fc/48]:eth0",
    kad_vif="eth1",
)
# The seed's three networks: IPv6 northbound VIP on eth0, IPv4 nodes on the sync link eth1.
IPV6_VIP_IPV4_NODES = _cfg(
    "ha0",
    ha_node_list=["192.0.2.10", "192.0.2.11"],
    kad_vip="[2001:db8:100::fc/64]:eth0",
    kad_vif="eth1",
)
IPV6_NODES = _cfg(
    "ha1",
    ha_node_list=["2001:db8:1::10", "2001:db8:1::11"],
    kad_vip="2001:db8:1::fc",
    kad_vif="eth1",
    kad_vri=7,
    advert_int=1,
)

# golden file -> (config, this node's address)
CASES = {
    "keepalived_ipv4.conf": (IPV4, "198.51.100.10"),
    "keepalived_ipv4_vip_eth2.conf": (IPV4_VIP_ETH2, "198.51.100.10"),
    "keepalived_ipv6_vip_on_other_iface.conf": (IPV6_VIP_OTHER_IFACE, "2001:db8:1::10"),
    "keepalived_ipv6_nodes.conf": (IPV6_NODES, "2001:db8:1::11"),
    "keepalived_ipv6_vip_ipv4_nodes.conf": (IPV6_VIP_IPV4_NODES, "192.0.2.10"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden(name: str) -> None:
    cfg, self_addr = CASES[name]
    assert_golden(name, render_keepalived(cfg, ip_address(self_addr), ROOT, CHECK))


def test_check_script_golden() -> None:
    assert_golden("esc-agent-alive.sh", render_check_script())


def test_priority_follows_the_node_list_order() -> None:
    first = render_keepalived(IPV4, ip_address("198.51.100.10"), ROOT, CHECK)
    second = render_keepalived(IPV4, ip_address("198.51.100.11"), ROOT, CHECK)
    assert "priority 101" in first
    assert "unicast_peer {\n        198.51.100.11\n" in first
    assert "priority 100" in second
    assert "unicast_src_ip 198.51.100.11" in second
    assert "unicast_peer {\n        198.51.100.10\n" in second


def test_gateway_and_routes_are_not_rendered() -> None:
    assert IPV4.ha is not None
    ha = HaConfig.model_validate(
        {
            **dict(IPV4.ha),
            "gateway_ip": "198.51.100.1",
            "routes": ["203.0.113.0/24:198.51.100.1:eth0"],
        }
    )
    cfg = IPV4.model_copy(update={"ha": ha})
    text = render_keepalived(cfg, ip_address("198.51.100.10"), ROOT, CHECK)
    assert text == render_keepalived(IPV4, ip_address("198.51.100.10"), ROOT, CHECK)


def test_heartbeat_age_comes_from_the_agent_config() -> None:
    cfg = IPV4.model_copy(
        update={"agent": IPV4.agent.model_copy(update={"heartbeat_timeout_s": 2.25})}
    )
    text = render_keepalived(cfg, ip_address("198.51.100.10"), ROOT, CHECK)
    assert f'script "{CHECK} /run/esc/agent_heartbeat 2250"' in text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.2, "0.2"), (1.0, "1"), (0.01, "0.01"), (0.1, "0.1"), (2.5, "2.5"), (40.95, "40.95")],
)
def test_advert_int_has_no_trailing_zeros(seconds: float, text: str) -> None:
    assert format_advert_int(seconds) == text


def test_self_address_must_be_a_node() -> None:
    with pytest.raises(ConfigError) as err:
        render_keepalived(IPV4, ip_address("198.51.100.12"), ROOT, CHECK)
    assert err.value.field == "ha.ha_node_list"


def test_no_ha_section() -> None:
    with pytest.raises(ConfigError) as err:
        render_keepalived(EscConfig(), ip_address("198.51.100.10"), ROOT, CHECK)
    assert err.value.field == "ha"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("kad_vif", "eth0\n}"),
        ("kad_vif", "eth0 x"),
        ("kad_vif", 'eth"0'),
        ("kad_vif", "eth#0"),
        ("kad_vif", ""),
    ],
)
def test_unsafe_values_are_refused_even_past_the_schema(field: str, value: str) -> None:
    assert IPV4.ha is not None
    bad = IPV4.model_copy(update={"ha": IPV4.ha.model_copy(update={field: value})})
    with pytest.raises(ConfigError) as err:
        render_keepalived(bad, ip_address("198.51.100.10"), ROOT, CHECK)
    assert err.value.field == f"ha.{field}"


def test_unsafe_node_name_and_paths_are_refused() -> None:
    with pytest.raises(ConfigError) as err:
        render_keepalived(
            IPV4.model_copy(update={"node_name": "ha0}"}), ip_address("198.51.100.10"), ROOT, CHECK
        )
    assert err.value.field == "node_name"
    with pytest.raises(ConfigError) as err:
        render_keepalived(IPV4, ip_address("198.51.100.10"), NodePaths(Path("/my root")), CHECK)
    assert err.value.field == "paths.run_dir"
    with pytest.raises(ConfigError) as err:
        render_keepalived(IPV4, ip_address("198.51.100.10"), ROOT, Path('/x/"check'))
    assert err.value.field == "check_script"


# --- keepalived -t ---------------------------------------------------------------------------


def _host_ifaces() -> list[str]:
    """Non-loopback interfaces, multicast-capable ones first (native_ipv6 adverts need it)."""
    net = Path("/sys/class/net")
    if not net.is_dir():
        return []

    def multicast(p: Path) -> bool:
        try:
            return bool(int((p / "flags").read_text(), 16) & 0x1000)  # IFF_MULTICAST
        except (OSError, ValueError):
            return False

    found = [p for p in net.iterdir() if p.name != "lo"]
    return [p.name for p in sorted(found, key=lambda p: (not multicast(p), p.name))]


def _use_existing_ifaces(text: str) -> str:
    """Rename interfaces this host lacks to ones it has (keepalived -t insists they exist)."""
    have = _host_ifaces()
    if not have:
        pytest.skip("no non-loopback interface here for keepalived -t")
    named = sorted(set(re.findall(r"(?:interface|dev) (\S+)", text)))
    missing = [n for n in named if n not in have]
    # The multicast-capable interface first, even if the config names it already.
    spare = have[:1] + [n for n in have[1:] if n not in named]
    mapping = {n: spare[i % len(spare)] for i, n in enumerate(missing)}
    return re.sub(r"(interface|dev) (\S+)", lambda m: f"{m[1]} {mapping.get(m[2], m[2])}", text)


@pytest.mark.skipif(shutil.which("keepalived") is None, reason="keepalived not installed")
@pytest.mark.parametrize("name", sorted(CASES))
def test_keepalived_accepts_the_config(name: str, tmp_path: Path) -> None:
    cfg, self_addr = CASES[name]
    paths = NodePaths(tmp_path / "root")
    script = tmp_path / "bin" / "esc-agent-alive"
    script.parent.mkdir()
    script.write_text(render_check_script())
    script.chmod(0o755)  # enable_script_security: owned by root, not writable by others
    text = render_keepalived(cfg, ip_address(self_addr), paths, script)
    conf = tmp_path / "keepalived.conf"
    conf.write_text(_use_existing_ifaces(text))
    pids = [f"--{kind}={tmp_path / kind}.pid" for kind in ("pid", "vrrp_pid", "checkers_pid")]
    proc = subprocess.run(
        ["keepalived", "-t", "-f", str(conf), *pids],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout


@pytest.mark.skipif(shutil.which("keepalived") is None, reason="keepalived not installed")
def test_keepalived_t_does_fail_on_a_bad_config(tmp_path: Path) -> None:
    """Guard: the check above would be worthless if keepalived -t always exited 0."""
    script = tmp_path / "esc-agent-alive"
    script.write_text(render_check_script())
    script.chmod(0o755)
    text = render_keepalived(IPV4, ip_address("198.51.100.10"), NodePaths(tmp_path), script)
    conf = tmp_path / "keepalived.conf"
    conf.write_text(_use_existing_ifaces(text.replace("vrrp_version 3", "vrrp_version 2")))
    proc = subprocess.run(
        [
            "keepalived",
            "-t",
            "-f",
            str(conf),
            f"--pid={tmp_path}/k.pid",
            f"--vrrp_pid={tmp_path}/v.pid",
            f"--checkers_pid={tmp_path}/c.pid",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode != 0
    assert "must be an integer" in proc.stderr


# --- the check script --------------------------------------------------------------------------


@pytest.fixture
def check(tmp_path: Path) -> Path:
    script = tmp_path / "esc-agent-alive"
    script.write_text(render_check_script())
    script.chmod(0o755)
    return script


def _run(script: Path, *args: str) -> int:
    sh = shutil.which("dash") or "/bin/sh"  # POSIX sh, no bash-isms
    return subprocess.run([sh, str(script), *args], timeout=10, check=False).returncode


def test_check_fresh_heartbeat_passes(check: Path, tmp_path: Path) -> None:
    beat = tmp_path / "agent_heartbeat"
    beat.touch()
    assert _run(check, str(beat), "1500") == 0


def test_check_recent_heartbeat_within_max_age_passes(check: Path, tmp_path: Path) -> None:
    beat = tmp_path / "agent_heartbeat"
    beat.touch()
    past = time.time() - 1.0
    os.utime(beat, (past, past))
    assert _run(check, str(beat), "1500") == 0


def test_check_stale_heartbeat_fails(check: Path, tmp_path: Path) -> None:
    beat = tmp_path / "agent_heartbeat"
    beat.touch()
    past = time.time() - 2.0
    os.utime(beat, (past, past))
    assert _run(check, str(beat), "1500") == 1


def test_check_heartbeat_from_the_future_fails(check: Path, tmp_path: Path) -> None:
    beat = tmp_path / "agent_heartbeat"
    beat.touch()
    future = time.time() + 10.0
    os.utime(beat, (future, future))
    assert _run(check, str(beat), "1500") == 1


def test_check_missing_heartbeat_fails(check: Path, tmp_path: Path) -> None:
    assert _run(check, str(tmp_path / "nope"), "1500") == 1


@pytest.mark.parametrize("max_ms", ["", "-1", "1.5", "1500;touch /tmp/x", "$(id)", "15 00"])
def test_check_refuses_a_bad_max_age(check: Path, tmp_path: Path, max_ms: str) -> None:
    beat = tmp_path / "agent_heartbeat"
    beat.touch()
    assert _run(check, str(beat), max_ms) == 2


def test_check_needs_exactly_two_arguments(check: Path, tmp_path: Path) -> None:
    beat = tmp_path / "agent_heartbeat"
    beat.touch()
    assert _run(check, str(beat)) == 2
    assert _run(check, str(beat), "1500", "x") == 2


def test_check_treats_odd_file_names_as_data(check: Path, tmp_path: Path) -> None:
    odd = tmp_path / "-n $(touch pwned) ;x"
    odd.touch()
    assert _run(check, str(odd), "1500") == 0
    assert not (tmp_path / "pwned").exists()
    assert not Path("pwned").exists()
