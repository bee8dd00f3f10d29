from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import pytest

from esc.cli.escadm import build_parser, parse_args
from esc.cli.secrets_cmd import (
    PREFIX,
    ca_of_line,
    export_line,
    generate_missing,
    import_line,
    run_secrets,
)
from esc.config.schema import EscConfig, NodePaths, parse_config, save_config
from esc.errors import ConfigError


def test_generated_once_and_copied_to_the_peer_exactly() -> None:
    first, changed = generate_missing(EscConfig())
    assert changed and len(first.agent.peer_secret) > 30 and first.replication.password
    again, changed = generate_missing(first)
    assert not changed and again == first
    line = export_line(first)
    assert line.startswith(PREFIX) and first.agent.peer_secret not in line
    peer = import_line(parse_config({"node_name": "esc-ha-1"}), line + "\n")
    assert peer.agent.peer_secret == first.agent.peer_secret
    assert peer.replication.password == first.replication.password
    assert peer.node_name == "esc-ha-1"


@pytest.mark.parametrize("line", ["garbage", PREFIX + "!!!", PREFIX + "e30="])
def test_a_bad_line_is_refused_naming_the_field(line: str) -> None:
    with pytest.raises(ConfigError) as exc:
        import_line(EscConfig(), line)
    assert exc.value.field == "secrets"


def test_nothing_to_export_before_ha_set() -> None:
    with pytest.raises(ConfigError, match="none to export"):
        export_line(EscConfig())


# --- import checks the line field by field (the format export writes) --------------------------

GOOD = {"peer_secret": "A" * 43, "password": "b-_9" * 8}
CERT = (
    "-----BEGIN CERTIFICATE-----\n"
    + "QUJD" * 16
    + "\n"
    + "QUJD" * 4
    + "\n-----END CERTIFICATE-----\n"
)
KEY = "-----BEGIN PRIVATE KEY-----\n" + "QUJD" * 16 + "\nQUI=\n-----END PRIVATE KEY-----\n"


def _line(payload: dict[str, object]) -> str:
    return PREFIX + base64.urlsafe_b64encode(json.dumps(payload).encode()).decode()


def test_a_secret_in_standard_base64_is_taken() -> None:
    """`openssl rand -base64 32` (44 characters, '+', '/', '='), as the upgrade notes suggest."""
    value = "ab+/" * 10 + "xyz="
    cfg = import_line(EscConfig(), _line({**GOOD, "peer_secret": value}))
    assert cfg.agent.peer_secret == value


def test_the_generated_format_and_a_pem_pair_are_taken() -> None:
    cfg = import_line(EscConfig(), _line({**GOOD, "ca_crt": CERT, "ca_key": KEY}))
    assert (cfg.agent.peer_secret, cfg.replication.password) == (
        GOOD["peer_secret"],
        GOOD["password"],
    )
    assert ca_of_line(_line({**GOOD, "ca_crt": CERT, "ca_key": KEY})) == (CERT, KEY)
    assert ca_of_line(_line(GOOD)) is None


BAD_SECRETS = [
    "",  # empty
    "x",  # one character
    "A" * 42,  # shorter than generated (43 for the peer secret, 32 for the password)
    "A" * 257,  # longer than any secret
    "A" * 40 + ' "x',  # a quote and a space: not base64url
    "A" * 42 + "\n",
    "A" * 42 + "\u0663",  # not ASCII
    12345678901234567890123456789012345678901234,  # not text
    None,
]


@pytest.mark.parametrize("value", BAD_SECRETS)
@pytest.mark.parametrize(
    ("key", "field"), [("peer_secret", "agent.peer_secret"), ("password", "replication.password")]
)
def test_a_secret_not_in_the_generated_format_is_refused_naming_it(
    key: str, field: str, value: object
) -> None:
    if key == "password" and value == "A" * 42:
        value = "A" * 31  # the password is generated shorter (24 bytes)
    with pytest.raises(ConfigError) as exc:
        import_line(EscConfig(), _line({**GOOD, key: value}))
    assert exc.value.field == field
    if isinstance(value, str) and value:
        assert value not in str(exc.value)


@pytest.mark.parametrize(
    "payload",
    [
        {"peer_secret": GOOD["peer_secret"]},  # no password
        {**GOOD, "extra": "x"},
        {**GOOD, "ca_crt": CERT},  # a certificate without its key
        [GOOD["peer_secret"], GOOD["password"]],
    ],
)
def test_a_line_without_exactly_exports_fields_is_refused(payload: object) -> None:
    line = PREFIX + base64.urlsafe_b64encode(json.dumps(payload).encode()).decode()
    with pytest.raises(ConfigError) as exc:
        import_line(EscConfig(), line)
    assert exc.value.field == "secrets"


@pytest.mark.parametrize(
    ("cert", "key", "field"),
    [
        (CERT.replace("CERTIFICATE", "PUBLIC KEY"), KEY, "secrets.ca_crt"),  # another label
        (CERT + CERT, KEY, "secrets.ca_crt"),  # two blocks
        (CERT.replace("QUJD" * 16, "QUJD" * 17), KEY, "secrets.ca_crt"),  # a line of 68
        ("-----BEGIN CERTIFICATE-----\nQUJD\n-----END CERTIFICATE-----\n", KEY, "secrets.ca_crt"),
        (CERT, KEY.replace("QUI=", "Q=I="), "secrets.ca_key"),  # '=' inside
        (CERT, KEY.replace("QUI=", "QUI"), "secrets.ca_key"),  # base64 without its padding
        (CERT, KEY + "trailing", "secrets.ca_key"),
        (CERT, KEY.replace("PRIVATE KEY", "RSA PRIVATE KEY"), "secrets.ca_key"),
        (CERT, 7, "secrets.ca_key"),
    ],
)
def test_a_ca_not_in_openssls_pem_shape_is_refused_naming_it(
    cert: object, key: object, field: str
) -> None:
    with pytest.raises(ConfigError) as exc:
        ca_of_line(_line({**GOOD, "ca_crt": cert, "ca_key": key}))
    assert exc.value.field == field


def test_export_refuses_a_secret_import_would_refuse() -> None:
    """A hand-set weak secret is refused where it is, never carried to the peer."""
    cfg = parse_config(
        {"agent": {"peer_secret": "hunter2hunter2"}, "replication": {"password": "p" * 32}}
    )
    with pytest.raises(ConfigError) as exc:
        export_line(cfg)
    assert exc.value.field == "agent.peer_secret"
    assert "hunter2" not in str(exc.value)


def test_a_refused_import_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = NodePaths(tmp_path / "n1")
    save_config(parse_config({"node_name": "esc-ha-1"}), paths.config_file)
    before = paths.config_file.read_bytes()
    bad = _line({**GOOD, "password": "p", "ca_crt": CERT, "ca_key": KEY})
    monkeypatch.setattr("sys.stdin", io.StringIO(bad + "\n"))
    args = parse_args(build_parser(), ["ha", "secrets", "import"])
    assert run_secrets(args, paths) == 2
    out, err = capsys.readouterr()
    assert err.startswith("escadm: replication.password: not in the generated format"), err
    assert "stored" not in out
    assert paths.config_file.read_bytes() == before
    assert not paths.pki_dir.exists()
