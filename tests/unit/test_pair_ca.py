"""Two-node mode's pair CA: made on the first node, carried to the peer by `escadm ha secrets`,
each node issuing its own certificate at the agent's start (openssl runs; no daemon, no
network)."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import pytest

from esc import pki
from esc.cli.escadm import build_parser, parse_args
from esc.cli.secrets_cmd import PREFIX, ca_of_line, export_line, generate_missing, run_secrets
from esc.config.schema import EscConfig, NodePaths, load_config, parse_config, save_config
from esc.errors import ConfigError

HA = {"ha_node_list": ["192.0.2.10", "192.0.2.11"], "kad_vip": "192.0.2.100", "kad_vif": "eth0"}


def node(tmp_path: Path, name: str) -> NodePaths:
    paths = NodePaths(tmp_path / name)
    cfg, _ = generate_missing(parse_config({"node_name": name, "ha": HA}))
    save_config(cfg, paths.config_file)
    return paths


def secrets(argv: list[str], paths: NodePaths) -> int:
    return run_secrets(parse_args(build_parser(), ["ha", "secrets", *argv]), paths)


def test_a_node_makes_the_ca_once_and_reissues_only_what_is_stale(tmp_path: Path) -> None:
    d = tmp_path / "pki"
    made = pki.ensure_node(d, "esc-ha-0", ["192.0.2.10"], make_ca=True)
    assert stat.S_IMODE((d / "ca.key").stat().st_mode) == 0o600
    assert stat.S_IMODE(made.key.stat().st_mode) == 0o600
    assert pki.cert_matches(d / "ca.crt", made.cert, ["192.0.2.10"])
    assert not pki.cert_matches(d / "ca.crt", made.cert, ["192.0.2.11"])
    first, ca = made.cert.read_bytes(), (d / "ca.crt").read_bytes()
    pki.ensure_node(d, "esc-ha-0", ["192.0.2.10"], make_ca=True)
    assert made.cert.read_bytes() == first and (d / "ca.crt").read_bytes() == ca  # kept
    pki.ensure_node(d, "esc-ha-0", ["192.0.2.12"], make_ca=True)  # a new address: reissued
    assert made.cert.read_bytes() != first and (d / "ca.crt").read_bytes() == ca
    assert pki.cert_matches(d / "ca.crt", made.cert, ["192.0.2.12"])
    assert sorted(p.name for p in d.iterdir()) == ["ca.crt", "ca.key", "host.crt", "host.key"]


def test_without_the_cas_key_a_wrong_certificate_is_refused_and_nothing_changes(
    tmp_path: Path,
) -> None:
    d = tmp_path / "pki"
    pki.ensure_node(d, "esc-ha-0", ["192.0.2.10"], make_ca=True)
    (d / "ca.key").unlink()  # quorum mode: the key stays with the operator
    before = {p.name: p.read_bytes() for p in d.iterdir()}
    with pytest.raises(ConfigError, match="not valid for this node") as exc:
        pki.ensure_node(d, "esc-ha-0", ["192.0.2.11"], make_ca=False)
    assert exc.value.field == "pki"
    assert {p.name: p.read_bytes() for p in d.iterdir()} == before
    with pytest.raises(ConfigError, match="missing"):
        pki.ensure_node(tmp_path / "empty", "esc-ha-0", ["192.0.2.10"], make_ca=False)
    assert not (tmp_path / "empty").exists()


def test_pairing_gives_the_peer_the_same_ca_and_each_node_its_own_certificate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    n0, n1 = node(tmp_path, "esc-ha-0"), node(tmp_path, "esc-ha-1")
    pki.ensure_node(n1.pki_dir, "esc-ha-1", ["192.0.2.11"], make_ca=True)  # its own CA first
    assert secrets(["export"], n0) == 0
    line = capsys.readouterr().out.strip()
    assert (n0.pki_dir / "ca.key").exists()  # made by the export
    assert "PRIVATE KEY" not in line  # one opaque line
    monkeypatch.setattr("sys.stdin", _Stdin(line + "\n"))
    assert secrets(["import"], n1) == 0
    assert "installed the pair CA" in capsys.readouterr().out
    assert (n1.pki_dir / "ca.crt").read_bytes() == (n0.pki_dir / "ca.crt").read_bytes()
    assert not (n1.pki_dir / "host.crt").exists()  # the old CA's: the agent issues anew
    own = pki.ensure_node(n1.pki_dir, "esc-ha-1", ["192.0.2.11"], make_ca=True)
    assert pki.cert_matches(n0.pki_dir / "ca.crt", own.cert, ["192.0.2.11"])
    assert (
        load_config(n1.config_file).agent.peer_secret
        == load_config(n0.config_file).agent.peer_secret
    )


class _Stdin:
    def __init__(self, text: str) -> None:
        self.text = text

    def readline(self) -> str:
        return self.text


@pytest.mark.parametrize(
    ("cert", "key", "field"),
    [
        ("x", "-----BEGIN PRIVATE KEY-----\nAA==\n-----END PRIVATE KEY-----\n", "secrets.ca_crt"),
        (
            f"-----BEGIN CERTIFICATE-----\n{'QUJD' * 12}\n-----END CERTIFICATE-----\n",
            "",
            "secrets.ca_key",
        ),
    ],
)
def test_a_damaged_ca_in_the_line_is_refused_naming_it_and_changes_nothing(
    tmp_path: Path, cert: str, key: str, field: str
) -> None:
    cfg, _ = generate_missing(EscConfig())
    with pytest.raises(ConfigError) as exc:
        export_line(cfg, (cert, key))  # export checks it too
    assert exc.value.field == field
    good = json.loads(base64.urlsafe_b64decode(export_line(cfg)[len(PREFIX) :]))
    line = (
        PREFIX
        + base64.urlsafe_b64encode(
            json.dumps({**good, "ca_crt": cert, "ca_key": key}).encode()
        ).decode()
    )
    with pytest.raises(ConfigError) as exc:
        ca_of_line(line)
    assert exc.value.field == field
    with pytest.raises(ConfigError):
        pki.install_ca(tmp_path / "pki", cert, key)
    assert not (tmp_path / "pki").exists()
    assert ca_of_line(export_line(cfg)) is None  # a line without a CA (quorum mode)


def test_an_ipv6_node_keeps_its_certificate(tmp_path: Path) -> None:
    d = tmp_path / "pki"
    made = pki.ensure_node(d, "esc-ha-0", ["2001:db8::a"], make_ca=True)
    first = made.cert.read_bytes()
    assert pki.cert_matches(d / "ca.crt", made.cert, ["2001:db8:0::a"])
    pki.ensure_node(d, "esc-ha-0", ["2001:db8::a"], make_ca=True)
    assert made.cert.read_bytes() == first


def test_an_installed_certificate_may_name_more_addresses_than_the_node_dials(
    tmp_path: Path,
) -> None:
    ca = pki.create_ca(tmp_path / "ca")
    both = pki.issue(ca, tmp_path / "made", "esc-ha-0", ["192.0.2.10", "2001:db8::a"])
    assert pki.cert_matches(ca.cert, both.cert, ["192.0.2.10"])
    assert not pki.cert_matches(ca.cert, both.cert, ["192.0.2.10"], exact=True)
    assert pki.cert_matches(ca.cert, both.cert, ["2001:db8::a", "192.0.2.10"], exact=True)
