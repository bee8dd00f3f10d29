"""``escadm ha pki``: the pair's certificates made from the config and installed per host
(openssl runs; no daemon, no network)."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

import pytest

from esc.cli.escadm import build_parser, parse_args
from esc.cli.pki_cmd import run_pki
from esc.config.schema import NodePaths, parse_config, save_config


def pki(argv: list[str], paths: NodePaths) -> int:
    return run_pki(parse_args(build_parser(), ["ha", "pki", *argv]), paths)


def config(paths: NodePaths, quorum: bool = True) -> None:
    ha: dict[str, object] = {
        "ha_node_list": ["192.0.2.10", "192.0.2.11"],
        "kad_vip": "192.0.2.100",
        "kad_vif": "eth0",
    }
    if quorum:
        ha |= {"quorum": "etcd", "witness": "192.0.2.30"}
    save_config(parse_config({"ha": ha}), paths.config_file)


def san(cert: Path) -> str:
    out = subprocess.run(
        ["openssl", "x509", "-noout", "-ext", "subjectAltName", "-in", str(cert)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return out.split("\n", 1)[1].strip()


def test_create_makes_each_members_certificate_and_install_puts_one_hosts_in_place(
    tmp_path: Path,
) -> None:
    paths = NodePaths(tmp_path / "root")
    config(paths)
    out = tmp_path / "made"
    assert pki(["create", str(out)], paths) == 0
    assert san(out / "esc-ha-1" / "host.crt") == "DNS:esc-ha-1, IP Address:192.0.2.11"
    assert san(out / "witness" / "host.crt") == "DNS:witness, IP Address:192.0.2.30"
    assert (out / "ca" / "ca.key").exists() and not (out / "esc-ha-0" / "ca.key").exists()
    assert pki(["install", str(out / "esc-ha-0")], paths) == 0
    d = paths.pki_dir
    assert sorted(p.name for p in d.iterdir()) == ["ca.crt", "host.crt", "host.key"]
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    assert stat.S_IMODE((d / "host.key").stat().st_mode) == 0o600
    verify = subprocess.run(
        ["openssl", "verify", "-CAfile", str(d / "ca.crt"), str(d / "host.crt")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert verify.returncode == 0, verify.stderr


def test_install_of_an_incomplete_directory_names_the_file_and_changes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = NodePaths(tmp_path / "root")
    src = tmp_path / "half"
    src.mkdir()
    (src / "ca.crt").write_text("x")
    assert pki(["install", str(src)], paths) == 2
    assert f"{src / 'host.crt'} missing" in capsys.readouterr().err
    assert not paths.pki_dir.exists()


def test_create_outside_quorum_mode_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = NodePaths(tmp_path / "root")
    config(paths, quorum=False)
    assert pki(["create", str(tmp_path / "made")], paths) == 2
    assert "ha.quorum" in capsys.readouterr().err
    assert not (tmp_path / "made").exists()
