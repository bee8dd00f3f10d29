"""``escadm ha set`` / ``bgp set`` / ``config validate``: every refusal names its flag, exits 2 and
leaves the config file byte-for-byte unchanged; valid invocations write a config whose rendered
keepalived/ExaBGP text equals the golden files. Host facts come from FakeHostFacts (no patching).
"""

from __future__ import annotations

import argparse
import io
from ipaddress import ip_address, ip_interface
from pathlib import Path
from typing import get_args

import pytest
from escadm_run import escadm

from esc.cli.config_flags import FIELD_OF_FLAG, NUMBER_FLAGS, flag_of
from esc.cli.escadm import build_parser, parse_args
from esc.cli.ha_set import (
    MD5_ON_ARGV_WARNING,
    add_bgp_set_parser,
    add_ha_set_parser,
    node_name_from,
    run_config_validate,
)
from esc.config.schema import (
    BgpConfig,
    EscConfig,
    HaConfig,
    NodePaths,
    load_config,
    parse_config,
    save_config,
)
from esc.drivers.exabgp_conf import render_exabgp
from esc.drivers.keepalived_conf import render_keepalived
from esc.host import FakeHostFacts, SystemHostFacts, parse_ip_json

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
CHECK = Path("/usr/libexec/esc/esc-agent-alive")  # as in test_keepalived_conf
# as in test_exabgp_conf
PROCESS = ["/usr/bin/python3", "-m", "esc.drivers.exabgp_api", "/run/esc/exabgp-api.sock"]
SECRET = "deadbeef42"

HA0 = FakeHostFacts(
    {
        "lo": [ip_interface("127.0.0.1/8")],
        "eth0": [ip_interface("198.51.100.10/24"), ip_interface("2001:db8::10/64")],
        "eth1": [ip_interface("2001:db8:1::10/64")],
        "eth2": [ip_interface("192.0.2.10/24")],
        "eth3": [],
    },
    "ha0.example",
)
HA1 = FakeHostFacts(
    {
        "eth0": [ip_interface("198.51.100.11/24"), ip_interface("2001:db8::11/64")],
        "eth1": [ip_interface("2001:db8:1::11/64")],
        "eth2": [ip_interface("192.0.2.11/24")],
    },
    "ha1",
)

IPV4_FLAGS = [
    "--ha_node_list",
    "198.51.100.10",
    "198.51.100.11",
    "--kad_vip",
    "198.51.100.254",
    "--kad_vif",
    "eth0",
]
BGP_FLAGS = [
    "--local_ip",
    "192.0.2.10",
    "--anycast_ip",
    "203.0.113.1",
    "--remote_ip",
    "192.0.2.1",
    "--local_as",
    "65010",
    "--remote_as",
    "65001",
    "--local_router_id",
    "192.0.2.10",
]


@pytest.fixture
def paths(tmp_path: Path) -> NodePaths:
    return NodePaths(tmp_path / "ha0")


@pytest.fixture
def configured(paths: NodePaths) -> bytes:
    """A node with HA and BGP configured; returns the file's bytes."""
    assert escadm(["ha", "set", *IPV4_FLAGS], paths, HA0) == 0
    assert escadm(["bgp", "set", *BGP_FLAGS, "--md5", SECRET], paths, HA0) == 0
    return paths.config_file.read_bytes()


def keepalived_of(paths: NodePaths, self_addr: str) -> str:
    cfg = load_config(paths.config_file)
    return render_keepalived(cfg, ip_address(self_addr), NodePaths(Path("/")), CHECK)


# --- refusals ----------------------------------------------------------------------------------

HA_BAD = [
    # (replacement flags, flag named in the error)
    (["--ha_node_list", "198.51.100.10", "not-an-ip"], "--ha_node_list"),
    (["--ha_node_list", "127.0.0.1", "198.51.100.11"], "--ha_node_list"),  # lo has it
    (["--ha_node_list", "198.51.100.10", "2001:db8::11"], "--ha_node_list"),
    (["--ha_node_list", "198.51.100.10"], "--ha_node_list"),
    (["--ha_node_list", "198.51.100.10", "198.51.100.11", "198.51.100.12"], "--ha_node_list"),
    (["--ha_node_list", "198.51.100.10", "198.51.100.10"], "--ha_node_list"),
    (["--ha_node_list", "198.51.100.20", "198.51.100.21"], "--ha_node_list"),  # owns neither
    (["--ha_node_list", "198.51.100.10", "198.51.100.11\n"], "--ha_node_list"),
    (["--kad_vip", "bogus"], "--kad_vip"),
    (["--kad_vip", "224.0.0.18"], "--kad_vip"),
    (["--kad_vip", "198.51.100.10"], "--kad_vip"),  # equals a node address
    (["--kad_vip", "198.51.100.11"], "--kad_vip"),
    (["--kad_vip", "203.0.113.254"], "--kad_vip"),  # in no subnet of eth0
    (["--kad_vip", "192.0.2.254"], "--kad_vip"),  # eth2's subnet, but on eth0
    (["--kad_vip", "198.51.100.254:eth9"], "--kad_vip"),  # no such interface
    (["--kad_vip", "198.51.100.254:eth3"], "--kad_vip"),  # interface without addresses
    (["--kad_vip", "192.0.2.10:eth2"], "--kad_vip"),  # eth2's own address
    (["--kad_vip", "2001:db8:7::fc"], "--kad_vip"),  # IPv6, but in no subnet of eth0
    (["--kad_vip", "198.51.100.254/33"], "--kad_vip"),
    (["--kad_vip", "198.51.100.254\n:eth0"], "--kad_vip"),
    (["--kad_vif", "eth9"], "--kad_vif"),
    (["--kad_vif", "eth2"], "--kad_vif"),  # the node address is on eth0
    (["--kad_vif", "eth0\nx"], "--kad_vif"),
    (["--kad_vif", "eth0 }"], "--kad_vif"),
    (["--kad_vif", "a-very-long-interface-name"], "--kad_vif"),
]
HA_EXTRA_BAD = [
    (["--kad_vri", "0"], "--kad_vri"),
    (["--kad_vri", "256"], "--kad_vri"),
    (["--kad_vri", "-1"], "--kad_vri"),
    (["--kad_vri", "x"], "--kad_vri"),
    (["--ha_mode", "raid"], "--ha_mode"),
    (["--advert_int", "0.015"], "--advert_int"),
    (["--advert_int", "50"], "--advert_int"),
    (["--advert_int", "0"], "--advert_int"),
    (["--advert_int", "100"], "--advert_int"),
    (["--advert_int", "0.001"], "--advert_int"),
    (["--advert_int", "nan"], "--advert_int"),
    (["--advert_int", "fast"], "--advert_int"),
    (["--gateway_ip", "2001:db8::1"], "--gateway_ip"),
    (["--gateway_ip", "127.0.0.1"], "--gateway_ip"),
    (["--db_volume_id", "vol-1", "--db_volume_path", "/mnt/db"], "--db_volume_path"),
    (["--db_volume_id", "vol\n1"], "--db_volume_id"),
    (["--db_volume_path", "/mnt/\x00db"], "--db_volume_path"),
    (["--db_volume_id", " "], "--db_volume_id"),
    (["--route", "garbage"], "--route"),
    (["--route", "203.0.113.0/24:198.51.100.1:eth9"], "--route"),
    (["--route", "224.0.0.0/4:198.51.100.1:eth0"], "--route"),
    (["--route", "203.0.113.0/24:127.0.0.1:eth0"], "--route"),
    (["--route", "[2001:db8:5::/48]:198.51.100.1:eth0"], "--route"),
    (["--route", "203.0.113.0/24:[2001:db8::1]:eth0"], "--route"),  # IPv4 via IPv6
    (["--ha_mode", "cinder"], "--ha_mode"),  # needs a volume
    (["--route", "203.0.113.0/24:198.51.100.1:eth0\n"], "--route"),
    (["--route", "203.0.113.0/24:198.51.100.1:eth0", "--route", "x"], "--route"),
]


def _replace(flags: list[str], changes: list[str]) -> list[str]:
    """IPV4_FLAGS with the flags named in ``changes`` replaced (or added)."""
    names = {c for c in changes if c.startswith("--")}
    out: list[str] = []
    skip = False
    for item in flags:
        if item.startswith("--"):
            skip = item in names
        if not skip:
            out.append(item)
    return out + changes


def _assert_refused(
    rc: int,
    capsys: pytest.CaptureFixture[str],
    flag: str,
    before: bytes,
    paths: NodePaths,
    *,
    warned: bool = False,
) -> str:
    """The one error line (after the warning of `--md5 SECRET`, when ``warned``)."""
    out, err = capsys.readouterr()
    if warned:
        assert err.startswith(MD5_ON_ARGV_WARNING + "\n"), err
        err = err.removeprefix(MD5_ON_ARGV_WARNING + "\n")
    assert rc == 2, (out, err)
    assert err.startswith(f"escadm: {flag}: "), err
    assert err.count("\n") == 1, err
    assert paths.config_file.read_bytes() == before
    assert "escadm reload" not in out
    return err


@pytest.mark.parametrize(("changes", "flag"), HA_BAD + HA_EXTRA_BAD)
def test_ha_set_refuses(
    changes: list[str],
    flag: str,
    configured: bytes,
    paths: NodePaths,
    capsys: pytest.CaptureFixture[str],
) -> None:
    capsys.readouterr()
    rc = escadm(["ha", "set", *_replace(IPV4_FLAGS, changes)], paths, HA0)
    _assert_refused(rc, capsys, flag, configured, paths)


@pytest.mark.parametrize(("changes", "flag"), HA_EXTRA_BAD)
def test_ha_set_partial_update_refuses(
    changes: list[str],
    flag: str,
    configured: bytes,
    paths: NodePaths,
    capsys: pytest.CaptureFixture[str],
) -> None:
    capsys.readouterr()
    rc = escadm(["ha", "set", *changes], paths, HA0)
    _assert_refused(rc, capsys, flag, configured, paths)


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--ha_node_list", "198.51.100.10", "198.51.100.11", "--kad_vip", "198.51.100.254"],
         "--kad_vif"),
        (["--kad_vip", "198.51.100.254", "--kad_vif", "eth0"], "--ha_node_list"),
        (["--ha_node_list", "198.51.100.10", "198.51.100.11", "--kad_vif", "eth0"], "--kad_vip"),
    ],
)  # fmt: skip
def test_ha_set_needs_its_partner_flags(
    argv: list[str],
    flag: str,
    configured: bytes,
    paths: NodePaths,
    capsys: pytest.CaptureFixture[str],
) -> None:
    capsys.readouterr()
    err = _assert_refused(escadm(["ha", "set", *argv], paths, HA0), capsys, flag, configured, paths)
    assert "required together" in err


@pytest.mark.parametrize(
    ("changes", "flag", "message"),
    [
        (["--advert_int", "100"], "--advert_int", "a multiple of 0.01 between 0.01 and 40.95"),
        (["--route", "203.0.113.0/24:[2001:db8::1]:eth0"], "--route", "differ in family"),
        (["--gateway_ip", "198.51.100.254"], "--gateway_ip", "not the VIP or a node address"),
    ],
)
def test_ha_set_names_the_flag_with_the_schemas_message(
    changes: list[str],
    flag: str,
    message: str,
    configured: bytes,
    paths: NodePaths,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The rule is the schema's (the same file refuses it, test_config_schema.py); escadm only
    names the flag."""
    capsys.readouterr()
    rc = escadm(["ha", "set", *changes], paths, HA0)
    assert message in _assert_refused(rc, capsys, flag, configured, paths)


def test_every_flag_sets_a_schema_field_and_the_table_reads_back() -> None:
    for flag, field in FIELD_OF_FLAG.items():
        section, name = field.split(".")
        model = HaConfig if section == "ha" else BgpConfig
        assert name in model.model_fields, field
        assert flag_of(field) == f"--{flag}"
        assert flag_of(f"{field}.0.gateway") == f"--{flag}"
    assert flag_of("ha") is None
    assert flag_of("ha.node_names") is None  # no flag sets it: the field is named as it is


def test_every_numeric_field_a_flag_sets_is_parsed_as_a_number() -> None:
    """The schema is strict: a flag setting a number must be in NUMBER_FLAGS, or its text
    would be refused as not a number even when it is one."""
    numeric = set()
    for flag, field in FIELD_OF_FLAG.items():
        section, name = field.split(".")
        model = HaConfig if section == "ha" else BgpConfig
        types = [model.model_fields[name].annotation]
        while types:  # through Optional and Annotated
            t = types.pop()
            if t in (int, float):
                numeric.add(flag)
            types += get_args(t)
    assert numeric == set(NUMBER_FLAGS) == {"kad_vri", "advert_int", "local_as", "remote_as"}


def test_ha_set_without_any_ha_yet_needs_the_three_flags(
    paths: NodePaths, capsys: pytest.CaptureFixture[str]
) -> None:
    save_config(EscConfig(node_name="ha0"), paths.config_file)
    before = paths.config_file.read_bytes()
    rc = escadm(["ha", "set", "--kad_vri", "5"], paths, HA0)
    _assert_refused(rc, capsys, "--ha_node_list", before, paths)


def test_ha_set_on_a_host_owning_both_addresses(
    configured: bytes, paths: NodePaths, capsys: pytest.CaptureFixture[str]
) -> None:
    both = FakeHostFacts({**HA0.ifaces, "eth0": [*HA0.ifaces["eth0"], *HA1.ifaces["eth0"]]})
    capsys.readouterr()
    rc = escadm(["ha", "set", *IPV4_FLAGS], paths, both)
    _assert_refused(rc, capsys, "--ha_node_list", configured, paths)


def test_ha_set_refuses_to_overwrite_an_invalid_config(
    paths: NodePaths, capsys: pytest.CaptureFixture[str]
) -> None:
    paths.config_file.parent.mkdir(parents=True)
    paths.config_file.write_text('node_name = "ha0"\n[ha]\nkad_vri = 0\n')
    before = paths.config_file.read_bytes()
    rc = escadm(["ha", "set", *IPV4_FLAGS], paths, HA0)
    err = capsys.readouterr().err
    assert rc == 2
    assert str(paths.config_file) in err
    assert paths.config_file.read_bytes() == before


def test_argparse_errors_name_the_flag_and_exit_2(
    configured: bytes, paths: NodePaths, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert escadm(["ha", "set", *IPV4_FLAGS, "--kad_vri"], paths, HA0) == 2
    assert "--kad_vri" in capsys.readouterr().err
    assert escadm(["ha", "set", "--no_such_flag", "1"], paths, HA0) == 2
    assert paths.config_file.read_bytes() == configured


BGP_BAD = [
    (["--local_as", "0"], "--local_as"),
    (["--local_as", "4294967296"], "--local_as"),
    (["--remote_as", "0"], "--remote_as"),
    (["--remote_as", "4294967296"], "--remote_as"),
    (["--remote_as", "AS65001"], "--remote_as"),
    (["--local_router_id", "2001:db8::10"], "--local_router_id"),
    (["--local_router_id", "300.1.1.1"], "--local_router_id"),
    (["--local_router_id", "192.0.2.10\n"], "--local_router_id"),
    (["--local_ip", "192.0.2.99"], "--local_ip"),  # not an address of this host
    (["--local_ip", "127.0.0.1"], "--local_ip"),  # lo has it
    (["--remote_ip", "2001:db8::1"], "--remote_ip"),
    (["--remote_ip", "192.0.2.10"], "--remote_ip"),
    (["--anycast_ip", "2001:db8:ff::1"], "--anycast_ip"),
    (["--anycast_ip", "192.0.2.10"], "--anycast_ip"),
    (["--anycast_ip", "203.0.113.1\nannounce route 198.51.100.0/24 next-hop self"],
     "--anycast_ip"),
]  # fmt: skip


@pytest.mark.parametrize(("changes", "flag"), BGP_BAD)
def test_bgp_set_refuses(
    changes: list[str],
    flag: str,
    configured: bytes,
    paths: NodePaths,
    capsys: pytest.CaptureFixture[str],
) -> None:
    capsys.readouterr()
    argv = [*_replace(BGP_FLAGS, changes), "--md5-file", str(_secret_file(paths, SECRET))]
    err = _assert_refused(
        escadm(["bgp", "set", *argv], paths, HA0), capsys, flag, configured, paths
    )
    assert SECRET not in err


@pytest.mark.parametrize(
    "secret",
    ["with space", 'quo"te', "semi;colon", "line\nbreak", "x" * 81, "brace{", "tab\there"],
)
def test_bgp_set_refuses_a_bad_secret_without_echoing_it(
    secret: str, configured: bytes, paths: NodePaths, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    rc = escadm(["bgp", "set", *BGP_FLAGS, "--md5", secret], paths, HA0)
    err = _assert_refused(rc, capsys, "--md5", configured, paths, warned=True)
    assert secret not in err


def _secret_file(paths: NodePaths, text: str, mode: int = 0o600) -> Path:
    path = paths.root / "md5.secret"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    return path


@pytest.mark.parametrize(
    "secret",
    ['quo"te', "single'", "back\\slash", "semi;colon", "tab\there", "cr\r", "x" * 81,
     "caf\u00e9", "\u0663\u0663\u0663", "with space", "\x7fdel"],
)  # fmt: skip
@pytest.mark.parametrize("how", ["file", "stdin"])
def test_md5_from_a_file_or_stdin_is_checked_as_from_argv(
    how: str,
    secret: str,
    configured: bytes,
    paths: NodePaths,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if how == "file":
        argv = ["--md5-file", str(_secret_file(paths, secret + "\n"))]
    else:
        monkeypatch.setattr("sys.stdin", io.StringIO(secret + "\n"))
        argv = ["--md5", "-"]
    capsys.readouterr()
    rc = escadm(["bgp", "set", *BGP_FLAGS, *argv], paths, HA0)
    err = _assert_refused(rc, capsys, "--md5", configured, paths)
    assert secret not in err and "printable ASCII" in err


@pytest.mark.parametrize(
    ("content", "mode", "message"),
    [
        ("", 0o600, "empty"),
        ("\nsecond-line", 0o600, "empty"),
        ("s3cret\n", 0o640, "others may access it (mode 0640); chmod 600"),
        ("s3cret\n", 0o604, "others may access it"),
        ("s3cret\n", 0o620, "others may access it"),
        (None, 0o600, "no such file"),
    ],
)
def test_md5_file_refused(
    content: str | None,
    mode: int,
    message: str,
    configured: bytes,
    paths: NodePaths,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = _secret_file(paths, content or "", mode)
    if content is None:
        path.unlink()
    capsys.readouterr()
    rc = escadm(["bgp", "set", "--md5-file", str(path)], paths, HA0)
    assert message in _assert_refused(rc, capsys, "--md5-file", configured, paths)


def test_md5_one_way_only(
    configured: bytes, paths: NodePaths, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _secret_file(paths, "s3cret\n")
    capsys.readouterr()
    rc = escadm(["bgp", "set", "--md5", "-", "--md5-file", str(path)], paths, HA0)
    assert "one way" in _assert_refused(rc, capsys, "--md5-file", configured, paths)


def test_md5_from_empty_stdin_is_refused(
    configured: bytes,
    paths: NodePaths,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    capsys.readouterr()
    rc = escadm(["bgp", "set", "--md5", "-"], paths, HA0)
    assert "none there" in _assert_refused(rc, capsys, "--md5", configured, paths)


@pytest.mark.parametrize("how", ["file", "stdin", "prompt"])
def test_md5_off_the_command_line_is_set_without_a_warning(
    how: str, paths: NodePaths, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    new = "n3w#S3cret!"  # '#' is kept inside ExaBGP's quoted string
    if how == "file":
        argv = ["--md5-file", str(_secret_file(paths, new + "\nnot read\n", 0o400))]
    elif how == "stdin":
        monkeypatch.setattr("sys.stdin", io.StringIO(new + "\nnot read\n"))
        argv = ["--md5", "-"]
    else:
        monkeypatch.setattr("getpass.getpass", lambda prompt="": new)
        argv = ["--md5"]  # alone: a prompt (twice)
    assert escadm(["bgp", "set", *BGP_FLAGS, *argv], paths, HA0) == 0
    out, err = capsys.readouterr()
    assert err == "" and new not in out and "bgp.md5: (unset) → ******" in out
    cfg = load_config(paths.config_file)
    assert cfg.bgp is not None and cfg.bgp.md5 == new
    assert f'md5-password "{new}";' in render_exabgp(cfg, PROCESS)


def test_md5_prompt_entries_must_agree(
    configured: bytes,
    paths: NodePaths,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    answers = iter(["first-try", "second-try"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    capsys.readouterr()
    rc = escadm(["bgp", "set", "--md5"], paths, HA0)
    err = _assert_refused(rc, capsys, "--md5", configured, paths)
    assert "differ" in err and "try" not in err


# Not ASCII decimal digits: int() takes the Arabic-Indic three, the fullwidth one and the
# spaces; the superscript two passes str.isdigit() and then fails int().
NOT_DIGITS = ["\u00b2", "\u0663", "\uff11", " 3", "3 ", "0x3", "", "+3", "3.0", "1_0"]


@pytest.mark.parametrize("text", NOT_DIGITS)
@pytest.mark.parametrize(
    ("command", "flags", "flag"),
    [
        ("ha", IPV4_FLAGS, "--kad_vri"),
        ("bgp", BGP_FLAGS, "--local_as"),
        ("bgp", BGP_FLAGS, "--remote_as"),
    ],
)
def test_integer_flags_take_ascii_digits_only(
    text: str,
    command: str,
    flags: list[str],
    flag: str,
    configured: bytes,
    paths: NodePaths,
    capsys: pytest.CaptureFixture[str],
) -> None:
    capsys.readouterr()
    rc = escadm([command, "set", *_replace(flags, [flag, text])], paths, HA0)
    err = _assert_refused(rc, capsys, flag, configured, paths)
    assert "is not a decimal integer (1-20 ASCII digits 0-9)" in err


@pytest.mark.parametrize("text", ["\u0660.\u0662", "0.2 ", "\uff10.2", "2e-1", "inf", ""])
def test_advert_int_takes_ascii_decimals_only(
    text: str, configured: bytes, paths: NodePaths, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    rc = escadm(["ha", "set", "--advert_int", text], paths, HA0)
    _assert_refused(rc, capsys, "--advert_int", configured, paths)


def test_integer_flags_in_ascii_digits_are_set(paths: NodePaths) -> None:
    assert (
        escadm(["ha", "set", *IPV4_FLAGS, "--kad_vri", "077", "--advert_int", "1"], paths, HA0) == 0
    )
    assert (
        escadm(["bgp", "set", *_replace(BGP_FLAGS, ["--remote_as", "4294967295"])], paths, HA0) == 0
    )
    cfg = load_config(paths.config_file)
    assert cfg.ha is not None and cfg.ha.kad_vri == 77 and cfg.ha.advert_int == 1.0
    assert cfg.bgp is not None and (cfg.bgp.local_as, cfg.bgp.remote_as) == (65010, 4294967295)


@pytest.mark.parametrize(
    "argv",
    [
        *(["ha", "history", "-n", t] for t in NOT_DIGITS),
        *(["log", "-n", t] for t in NOT_DIGITS),
        *(["ha", "switchover", "--wait", t] for t in ["\u0663", "nan", "inf", "1e3", " 3", ""]),
    ],
)
def test_other_number_flags_take_ascii_digits_only(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        parse_args(build_parser(), argv)
    assert exc.value.code == 2
    assert f"argument {argv[-2]}: {argv[-1]!r} is not " in capsys.readouterr().err


def test_other_number_flags_in_ascii_digits() -> None:
    assert parse_args(build_parser(), ["ha", "history", "-n", "7"]).n == 7
    assert parse_args(build_parser(), ["log", "-n", "0"]).n == 0
    assert parse_args(build_parser(), ["ha", "switchover", "--wait", "2.5"]).wait == 2.5


def test_bgp_set_needs_its_partner_flags(
    configured: bytes, paths: NodePaths, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    rc = escadm(["bgp", "set", *BGP_FLAGS[:-2]], paths, HA0)
    _assert_refused(rc, capsys, "--local_router_id", configured, paths)


# --- valid invocations -------------------------------------------------------------------------


def _golden(name: str) -> str:
    return (GOLDEN / name).read_text()


def test_ha_set_ipv4_on_a_fresh_node(paths: NodePaths, capsys: pytest.CaptureFixture[str]) -> None:
    assert escadm(["ha", "set", *IPV4_FLAGS], paths, HA0) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert "ha.kad_vip: (unset) → 198.51.100.254" in out
    assert "ha.ha_node_list: (unset) → 198.51.100.10 198.51.100.11" in out
    assert out.rstrip().endswith("run `escadm reload` to apply")
    cfg = load_config(paths.config_file)
    assert cfg.node_name == "ha0"  # from the host name "ha0.example"
    assert paths.config_file.stat().st_mode & 0o777 == 0o600
    assert keepalived_of(paths, "198.51.100.10") == _golden("keepalived_ipv4.conf")


def test_ha_set_vip_on_another_interface_with_equals_forms(
    configured: bytes, paths: NodePaths, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "ha",
        "set",
        "--ha_node_list=198.51.100.10,198.51.100.11",
        "--kad_vip=192.0.2.254:eth2",
        "--kad_vif=eth0",
    ]
    assert escadm(argv, paths, HA0) == 0
    out = capsys.readouterr().out
    assert "ha.kad_vip: 198.51.100.254 → 192.0.2.254:eth2" in out
    assert keepalived_of(paths, "198.51.100.10") == _golden("keepalived_ipv4_vip_eth2.conf")


def test_ha_set_ipv6_vip_on_another_interface(paths: NodePaths) -> None:
    argv = ["--ha_node_list", "2001:db8:1::10", "2001:db8:1::11"]
    argv += ["--kad_vip", "[2001:db8::fc/48]:eth0", "--kad_vif", "eth1"]
    assert escadm(["ha", "set", *argv], paths, HA0) == 0
    text = keepalived_of(paths, "2001:db8:1::10")
    assert text == _golden("keepalived_ipv6_vip_on_other_iface.conf")


def test_ha_set_ipv6_vip_over_ipv4_nodes(paths: NodePaths) -> None:
    """The seed's three networks: an IPv6 northbound VIP, heartbeats over IPv4."""
    argv = ["--ha_node_list", "198.51.100.10", "198.51.100.11"]
    argv += ["--kad_vip", "[2001:db8::fc/64]:eth0", "--kad_vif", "eth0"]
    assert escadm(["ha", "set", *argv], paths, HA0) == 0
    text = keepalived_of(paths, "198.51.100.10")
    assert "native_ipv6" in text and "2001:db8::fc/64 dev eth0" in text


def test_ha_set_refuses_an_ipv4_vip_over_ipv6_nodes(paths: NodePaths) -> None:
    argv = ["--ha_node_list", "2001:db8:1::10", "2001:db8:1::11"]
    argv += ["--kad_vip", "198.51.100.254:eth0", "--kad_vif", "eth1"]
    assert escadm(["ha", "set", *argv], paths, HA0) != 0
    assert not paths.config_file.exists()


def test_ha_set_ipv6_nodes_on_the_second_node(tmp_path: Path) -> None:
    paths = NodePaths(tmp_path / "ha1")
    argv = ["--ha_node_list", "2001:db8:1::10", "2001:db8:1::11", "--kad_vip", "2001:db8:1::fc"]
    argv += ["--kad_vif", "eth1", "--kad_vri", "7", "--advert_int", "1"]
    assert escadm(["ha", "set", *argv], paths, HA1) == 0
    assert keepalived_of(paths, "2001:db8:1::11") == _golden("keepalived_ipv6_nodes.conf")


def test_ha_set_routes_gateway_and_storage(
    configured: bytes, paths: NodePaths, capsys: pytest.CaptureFixture[str]
) -> None:
    extra = ["--route", "203.0.113.0/24:198.51.100.1:eth0"]
    extra += ["--route", "[2001:db8:5::/48]:[2001:db8::1]:eth0"]
    extra += ["--gateway_ip", "198.51.100.1", "--ha_mode", "drbd_on_cinder"]
    extra += ["--db_volume_path", "/mnt/esc-db"]
    capsys.readouterr()
    assert escadm(["ha", "set", *IPV4_FLAGS, *extra], paths, HA0) == 0
    out = capsys.readouterr().out
    assert (
        "ha.routes: (unset) → 203.0.113.0/24:198.51.100.1:eth0 [2001:db8:5::/48]:[2001:db8::1]:eth0"
        in out
    )
    assert "ha.ha_mode: drbd → drbd_on_cinder" in out
    cfg = load_config(paths.config_file)
    assert cfg.ha is not None
    assert [str(r.gateway) for r in cfg.ha.routes] == ["198.51.100.1", "2001:db8::1"]
    assert cfg.ha.db_volume_path == "/mnt/esc-db"
    # routes and the gateway are the agent's business: keepalived's config is unchanged
    assert keepalived_of(paths, "198.51.100.10") == _golden("keepalived_ipv4.conf")


def test_ha_set_partial_update_keeps_the_rest(
    configured: bytes, paths: NodePaths, capsys: pytest.CaptureFixture[str]
) -> None:
    assert escadm(["ha", "set", "--db_volume_id", "vol-1"], paths, HA0) == 0
    assert escadm(["ha", "set", "--kad_vri", "9", "--db_volume_path", "/mnt/db"], paths, HA0) == 0
    out = capsys.readouterr().out
    assert "ha.kad_vri: (unset) → 9" in out
    assert "ha.db_volume_id: vol-1 → (unset)" in out  # the two are exclusive
    cfg = load_config(paths.config_file)
    assert cfg.ha is not None
    assert cfg.ha.vrid == 9
    assert str(cfg.ha.kad_vip) == "198.51.100.254"
    assert cfg.bgp is not None  # the other section is untouched
    assert cfg.bgp.md5 == SECRET


def test_ha_set_same_values_is_no_change(
    configured: bytes, paths: NodePaths, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert escadm(["ha", "set", *IPV4_FLAGS], paths, HA0) == 0
    assert "no change" in capsys.readouterr().out
    assert paths.config_file.read_bytes() == configured


def test_bgp_set_writes_and_masks_the_secret(
    paths: NodePaths, capsys: pytest.CaptureFixture[str]
) -> None:
    assert escadm(["bgp", "set", *BGP_FLAGS, "--md5", SECRET], paths, HA0) == 0
    out, err = capsys.readouterr()
    assert SECRET not in out + err
    assert err == MD5_ON_ARGV_WARNING + "\n"  # the guide's form works, with a warning
    assert "bgp.md5: (unset) → ******" in out
    assert "bgp.local_as: (unset) → 65010" in out
    cfg = load_config(paths.config_file)
    assert render_exabgp(cfg, PROCESS) == _golden("exabgp_md5.conf")
    # a changed secret shows as changed, still masked
    assert escadm(["bgp", "set", "--md5", SECRET + "x"], paths, HA0) == 0
    out, err = capsys.readouterr()
    assert "bgp.md5: ****** → ****** (changed)" in out
    assert SECRET not in out + err


def test_bgp_set_without_secret(paths: NodePaths) -> None:
    assert escadm(["bgp", "set", *BGP_FLAGS], paths, HA0) == 0
    cfg = load_config(paths.config_file)
    assert render_exabgp(cfg, PROCESS) == _golden("exabgp_ipv4.conf")


def test_secret_never_printed_anywhere(
    configured: bytes, paths: NodePaths, capsys: pytest.CaptureFixture[str]
) -> None:
    escadm(["ha", "set", "--kad_vri", "9"], paths, HA0)
    escadm(["bgp", "set", "--local_as", "0"], paths, HA0)
    run_config_validate(paths.config_file)
    out, err = capsys.readouterr()
    assert SECRET not in out + err


# --- config validate ---------------------------------------------------------------------------


def test_config_validate_ok(
    configured: bytes, paths: NodePaths, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert run_config_validate(paths.config_file) == 0
    assert capsys.readouterr().out.startswith("OK")


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ('[ha]\nha_node_list = ["198.51.100.10", "198.51.100.11"]\nkad_vip = "198.51.100.254"\n'
         'kad_vif = "eth0"\nkad_vri = 0\n', "ha.kad_vri"),
        ('[ha]\nha_node_list = ["198.51.100.10", "198.51.100.11"]\nkad_vip = "198.51.100.254"\n'
         'kad_vif = "eth0"\nadvert_int = 0.015\n', "ha.advert_int"),
        ('[ha]\nha_node_list = ["2001:db8:1::10", "2001:db8:1::11"]\nkad_vip = "198.51.100.254"\n'
         'kad_vif = "eth1"\n', "ha.kad_vip"),
        ('[ha]\nha_node_list = ["198.51.100.10", "198.51.100.11"]\nkad_vip = "198.51.100.254"\n'
         'kad_vif = "eth0"\nadvert_int = 100\n', "ha.advert_int"),
        ('[ha]\nha_node_list = ["198.51.100.10", "198.51.100.11"]\nkad_vip = "198.51.100.254"\n'
         'kad_vif = "eth0"\nroutes = ["203.0.113.0/24:[2001:db8::1]:eth0"]\n', "ha.routes"),
        ('node_name = "bad name"\n', "node_name"),
        ("not toml [", ""),
        # strict types: TOML's own type or refused, never converted
        ("[manager]\nhttp_port = true\n", "manager.http_port"),
        ('[database]\nport = "5432"\n', "database.port"),
        ("[agent]\ncycle_s = false\n", "agent.cycle_s"),
        ('[ha]\nha_node_list = ["198.51.100.10", "198.51.100.11"]\nkad_vip = "198.51.100.254"\n'
         'kad_vif = "eth0"\nkad_vri = "7"\n', "ha.kad_vri"),
    ],
)  # fmt: skip
def test_config_validate_names_the_field(
    text: str, field: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "esc.toml"
    path.write_text(text)
    assert run_config_validate(path) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"escadm: {path}: {field}")


def test_config_validate_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_config_validate(tmp_path / "nope.toml") == 2
    assert "no such config file" in capsys.readouterr().err


# --- host facts --------------------------------------------------------------------------------

IP_JSON = """[
 {"ifindex":1,"ifname":"lo","addr_info":[{"family":"inet","local":"127.0.0.1","prefixlen":8},
   {"family":"inet6","local":"::1","prefixlen":128}]},
 {"ifindex":2,"ifname":"eth0","addr_info":[{"family":"inet","local":"192.0.2.2","prefixlen":24},
   {"family":"inet6","local":"fe80::1","prefixlen":64}]},
 {"ifindex":3,"ifname":"ifb0","addr_info":[]}
]"""


def test_parse_ip_json() -> None:
    facts = parse_ip_json(IP_JSON)
    assert facts == {
        "lo": [ip_interface("127.0.0.1/8"), ip_interface("::1/128")],
        "eth0": [ip_interface("192.0.2.2/24"), ip_interface("fe80::1/64")],
        "ifb0": [],
    }


def test_system_host_facts_reads_this_host() -> None:
    facts = SystemHostFacts().addresses()
    assert "lo" in facts
    assert isinstance(SystemHostFacts().hostname(), str)


@pytest.mark.parametrize(
    ("hostname", "name"),
    [("ha0.example.org", "ha0"), ("my host", "my-host"), ("", "esc"), ("_x", "x")],
)
def test_node_name_from_hostname(hostname: str, name: str) -> None:
    assert node_name_from(hostname) == name
    parse_config({"node_name": node_name_from(hostname)})


def test_help_renders() -> None:
    parser = argparse.ArgumentParser(prog="escadm")
    top = parser.add_subparsers()
    for add in (add_ha_set_parser, add_bgp_set_parser):
        text = add(top.add_parser("x" + add.__name__).add_subparsers()).format_help()
        assert "--" in text
