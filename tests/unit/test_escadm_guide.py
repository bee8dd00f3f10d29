"""``escadm ha set`` / ``bgp set`` as the ESC install guide prints them: its argument forms
(``--ha_node_list=<IP1> <IP2>``, ``--kad_vip= <ip>``) and its real, non-documentation addresses,
on a host (FakeHostFacts) that owns such addresses. Refusals name the flag and write nothing."""

from __future__ import annotations

from ipaddress import ip_address, ip_interface
from pathlib import Path

import pytest
from escadm_run import escadm as run_escadm

from esc.cli import escadm as escadm_cli
from esc.cli.config_flags import BGP_FLAGS, HA_FLAGS
from esc.cli.guide_args import guide_argv, normalise
from esc.config.schema import NodePaths, load_config
from esc.errors import ConfigError
from esc.host import FakeHostFacts, HostFacts

SECRET = "guide-secret-1"
HOST = FakeHostFacts(
    {
        "lo": [ip_interface("127.0.0.1/8"), ip_interface("::1/128")],
        "eth0": [ip_interface("192.168.0.239/24"), ip_interface("2001:cc0:2020::10/48")],
        "eth1": [ip_interface("10.85.103.10/24")],
        "eth2": [ip_interface("172.16.5.10/16")],
        "eth3": [ip_interface("169.254.10.2/30")],
    },
    "esc-a.example",
)


def escadm(argv: list[str], paths: NodePaths, host: HostFacts = HOST) -> int:
    return run_escadm(argv, paths, host)


@pytest.fixture
def paths(tmp_path: Path) -> NodePaths:
    return NodePaths(tmp_path / "node")


# --- the rewrite alone -------------------------------------------------------------------------

HA = (HA_FLAGS, frozenset({"ha_node_list"}))


@pytest.mark.parametrize(
    ("args", "want"),
    [
        (["--kad_vip=", "192.0.2.254"], ["--kad_vip", "192.0.2.254"]),
        (["--kad_vif=", "eth0"], ["--kad_vif", "eth0"]),
        (["--ha_node_list=192.0.2.10", "192.0.2.11"],
         ["--ha_node_list", "192.0.2.10", "192.0.2.11"]),
        (["--ha_node_list=", "192.0.2.10", "192.0.2.11"],
         ["--ha_node_list", "192.0.2.10", "192.0.2.11"]),
        (["--ha_node_list=192.0.2.10,192.0.2.11"], ["--ha_node_list", "192.0.2.10,192.0.2.11"]),
        # forms argparse already takes stay as they are
        (["--kad_vip=192.0.2.254"], ["--kad_vip=192.0.2.254"]),
        (["--kad_vip", "192.0.2.254"], ["--kad_vip", "192.0.2.254"]),
        (["--ha_node_list", "192.0.2.10", "192.0.2.11"],
         ["--ha_node_list", "192.0.2.10", "192.0.2.11"]),
        (["--db_volume_path==x"], ["--db_volume_path==x"]),
        # a negative number is a value (the range check refuses it later), not an option
        (["--kad_vri=", "-1"], ["--kad_vri", "-1"]),
        # not an option of the command: argparse reports it
        (["--no_such=", "x"], ["--no_such=", "x"]),
        (["-h"], ["-h"]),
    ],
)  # fmt: skip
def test_normalise(args: list[str], want: list[str]) -> None:
    assert normalise(args, *HA) == want


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["--kad_vip=", "--kad_vif", "eth0"], "--kad_vip"),  # never takes the next option
        (["--kad_vip=", "--kad_vif=", "eth0"], "--kad_vip"),
        (["--ha_node_list=", "--kad_vip", "192.0.2.254"], "--ha_node_list"),
        (["--kad_vip", "192.0.2.254", "--kad_vif="], "--kad_vif"),  # nothing after it
        (["--kad_vri=", "-h"], "--kad_vri"),
    ],
)
def test_normalise_refuses_an_equals_sign_without_a_value(args: list[str], flag: str) -> None:
    with pytest.raises(ConfigError) as err:
        normalise(args, *HA)
    assert err.value.field == flag


def test_only_ha_set_and_bgp_set_are_rewritten() -> None:
    assert guide_argv(["bgp", "set", "--md5=", "x"]) == ["bgp", "set", "--md5", "x"]
    assert guide_argv(["ha", "status", "--kad_vip=", "x"]) == ["ha", "status", "--kad_vip=", "x"]
    assert guide_argv(["ha"]) == ["ha"]
    assert guide_argv([]) == []
    assert normalise(["--local_ip=", "192.0.2.10"], BGP_FLAGS, frozenset()) == [
        "--local_ip",
        "192.0.2.10",
    ]


# --- through escadm: the guide's forms -> the config written ----------------------------------

NODES = ("192.168.0.239", "192.168.0.243")

HA_FORMS = [
    # (argv after "ha set", node list, VIP as stored, kad_vif)
    (["--ha_node_list=192.168.0.239", "192.168.0.243", "--kad_vip=", "192.168.0.250",
      "--kad_vif=", "eth0"], NODES, "192.168.0.250", "eth0"),
    (["--ha_node_list=", "192.168.0.239", "192.168.0.243", "--kad_vip=",
      "[2001:cc0:2020::fc/48]:eth0", "--kad_vif=", "eth0"], NODES, "[2001:cc0:2020::fc/48]:eth0",
     "eth0"),
    (["--kad_vif=", "eth0", "--kad_vip=", "192.168.0.250:eth0", "--ha_node_list=192.168.0.243",
      "192.168.0.239"], NODES[::-1], "192.168.0.250:eth0", "eth0"),
    (["--ha_node_list=192.168.0.239", "192.168.0.243", "--kad_vip", "192.168.0.250",
      "--kad_vif=eth0"], NODES, "192.168.0.250", "eth0"),
    # the forms that worked before
    (["--ha_node_list", "192.168.0.239", "192.168.0.243", "--kad_vip", "192.168.0.250",
      "--kad_vif", "eth0"], NODES, "192.168.0.250", "eth0"),
    (["--ha_node_list=192.168.0.239,192.168.0.243", "--kad_vip=192.168.0.250", "--kad_vif=eth0"],
     NODES, "192.168.0.250", "eth0"),
    # 172.16/12 and 10/8
    (["--ha_node_list", "172.16.5.10", "172.16.5.11", "--kad_vip=", "172.16.5.100",
      "--kad_vif=", "eth2"], ("172.16.5.10", "172.16.5.11"), "172.16.5.100", "eth2"),
    (["--ha_node_list=10.85.103.11", "10.85.103.10", "--kad_vip=", "10.85.103.254/24",
      "--kad_vif=", "eth1"], ("10.85.103.11", "10.85.103.10"), "10.85.103.254/24", "eth1"),
    # 2001:cc0:: nodes
    (["--ha_node_list=2001:cc0:2020::10", "2001:cc0:2020::11", "--kad_vip=", "2001:cc0:2020::fc",
      "--kad_vif=", "eth0"], ("2001:cc0:2020::10", "2001:cc0:2020::11"), "2001:cc0:2020::fc",
     "eth0"),
]  # fmt: skip


@pytest.mark.parametrize(("argv", "nodes", "vip", "vif"), HA_FORMS)
def test_ha_set_takes_the_guides_forms_and_addresses(
    argv: list[str], nodes: tuple[str, str], vip: str, vif: str, paths: NodePaths
) -> None:
    assert escadm(["ha", "set", *argv], paths) == 0
    ha = load_config(paths.config_file).ha
    assert ha is not None
    assert ha.ha_node_list == tuple(ip_address(n) for n in nodes)
    assert (str(ha.kad_vip), ha.kad_vif) == (vip, vif)


def test_ha_set_the_guides_other_options_in_its_forms(paths: NodePaths) -> None:
    argv = ["--ha_node_list=192.168.0.239", "192.168.0.243", "--kad_vip=", "192.168.0.250"]
    argv += ["--kad_vif=", "eth0", "--route=", "10.85.103.0/24:192.168.0.1:eth1"]
    argv += ["--route", "[2001:cc0:1::/48]:[fe80::1]:eth0", "--gateway_ip=", "192.168.0.1"]
    argv += ["--kad_vri=", "77", "--advert_int=", "1", "--ha_mode=", "drbd_on_cinder"]
    argv += ["--db_volume_id=", "vol-1"]
    assert escadm(["ha", "set", *argv], paths) == 0
    ha = load_config(paths.config_file).ha
    assert ha is not None
    assert [f"{r.dest} {r.gateway} {r.iface}" for r in ha.routes] == [
        "10.85.103.0/24 192.168.0.1 eth1",
        "2001:cc0:1::/48 fe80::1 eth0",
    ]
    assert (str(ha.gateway_ip), ha.vrid, ha.advert_int) == ("192.168.0.1", 77, 1.0)
    assert (ha.ha_mode, ha.db_volume_id) == ("drbd_on_cinder", "vol-1")


BGP_WANT = ("10.85.103.10", "172.16.200.1", "10.85.103.1", 65010, 65001, "10.85.103.10")


@pytest.mark.parametrize(
    ("argv", "want"),
    [
        (["--local_ip=", "10.85.103.10", "--anycast_ip=", "172.16.200.1", "--remote_ip=",
          "10.85.103.1", "--local_as=", "65010", "--remote_as=", "65001", "--local_router_id=",
          "10.85.103.10", "--md5=", SECRET], BGP_WANT),
        (["--local_ip=10.85.103.10", "--anycast_ip=172.16.200.1", "--remote_ip=10.85.103.1",
          "--local_as=65010", "--remote_as=65001", "--local_router_id=10.85.103.10",
          f"--md5={SECRET}"], BGP_WANT),
        (["--local_ip", "10.85.103.10", "--anycast_ip", "172.16.200.1", "--remote_ip",
          "10.85.103.1", "--local_as", "65010", "--remote_as", "65001", "--local_router_id",
          "10.85.103.10", "--md5", SECRET], BGP_WANT),
        (["--local_ip=", "2001:cc0:2020::10", "--anycast_ip=", "2001:cc0:ffff::1", "--remote_ip=",
          "2001:cc0:2020::1", "--local_as=", "65010", "--remote_as=", "65001",
          "--local_router_id=", "192.168.0.239"],
         ("2001:cc0:2020::10", "2001:cc0:ffff::1", "2001:cc0:2020::1", 65010, 65001,
          "192.168.0.239")),
        # a BGP session over IPv4 link-local (cloud peerings)
        (["--local_ip=", "169.254.10.2", "--anycast_ip=", "172.16.200.1", "--remote_ip=",
          "169.254.10.1", "--local_as=", "65010", "--remote_as=", "65001", "--local_router_id=",
          "172.16.5.10"],
         ("169.254.10.2", "172.16.200.1", "169.254.10.1", 65010, 65001, "172.16.5.10")),
    ],
)  # fmt: skip
def test_bgp_set_takes_the_guides_forms_and_addresses(
    argv: list[str], want: tuple[object, ...], paths: NodePaths
) -> None:
    assert escadm(["bgp", "set", *argv], paths) == 0
    bgp = load_config(paths.config_file).bgp
    assert bgp is not None
    got = (bgp.local_ip, bgp.anycast_ip, bgp.remote_ip, bgp.local_as, bgp.remote_as)
    assert (*(str(a) for a in got[:3]), *got[3:], str(bgp.local_router_id)) == want


# --- through escadm: refusals ------------------------------------------------------------------

HA_OK = ["--ha_node_list", *NODES, "--kad_vip", "192.168.0.250", "--kad_vif", "eth0"]
BGP_OK = ["--local_ip", "10.85.103.10", "--anycast_ip", "172.16.200.1", "--remote_ip"]
BGP_OK += ["10.85.103.1", "--local_as", "65010", "--remote_as", "65001"]
BGP_OK += ["--local_router_id", "10.85.103.10"]

REFUSED = [
    # (argv, flag named, fragment of the message)
    # the guide's forms gone wrong
    (["ha", "set", "--ha_node_list=", *NODES, "--kad_vip=", "--kad_vif", "eth0"], "--kad_vip",
     "no value"),
    (["ha", "set", "--ha_node_list=", "--kad_vip", "192.168.0.250", "--kad_vif", "eth0"],
     "--ha_node_list", "no value"),
    (["ha", "set", *HA_OK, "--kad_vri="], "--kad_vri", "no value"),
    (["ha", "set", "--ha_node_list=192.168.0.239", "--kad_vip=", "192.168.0.250", "--kad_vif=",
      "eth0"], "--ha_node_list", "exactly two"),
    (["ha", "set", "--ha_node_list=192.168.0.239", "192.168.0.243", "192.168.0.244",
      "--kad_vip=", "192.168.0.250", "--kad_vif=", "eth0"], "--ha_node_list", "exactly two"),
    (["bgp", "set", "--local_ip=", "--anycast_ip", "172.16.200.1"], "--local_ip", "no value"),
    (["bgp", "set", *BGP_OK, "--md5="], "--md5", "no value"),
    # addresses that can never work, on a host that has them
    (["ha", "set", *HA_OK[:1], "127.0.0.1", NODES[1], *HA_OK[3:]], "--ha_node_list", "loopback"),
    (["ha", "set", *HA_OK[:3], "--kad_vip", "192.168.0.255", *HA_OK[5:]], "--kad_vip",
     "broadcast address of 192.168.0.0/24"),
    (["ha", "set", *HA_OK[:3], "--kad_vip", "192.168.0.0", *HA_OK[5:]], "--kad_vip",
     "network address"),
    (["ha", "set", *HA_OK[:3], "--kad_vip", "169.254.10.1:eth3", *HA_OK[5:]], "--kad_vip",
     "link-local"),
    (["ha", "set", *HA_OK[:3], "--kad_vip", "224.0.0.18", *HA_OK[5:]], "--kad_vip", "multicast"),
    (["ha", "set", *HA_OK[:3], "--kad_vip", NODES[1], *HA_OK[5:]], "--kad_vip", "node addresses"),
    (["ha", "set", *HA_OK, "--gateway_ip", "192.168.0.250"], "--gateway_ip", "not the VIP"),
    (["ha", "set", *HA_OK, "--gateway_ip", "127.0.0.1"], "--gateway_ip", "loopback"),
    (["ha", "set", *HA_OK, "--route", "10.85.103.0/24:127.0.0.1:eth1"], "--route", "loopback"),
    (["ha", "set", *HA_OK, "--route", "224.0.0.0/4:192.168.0.1:eth0"], "--route", "multicast"),
    (["bgp", "set", *BGP_OK[:1], "127.0.0.1", *BGP_OK[2:]], "--local_ip", "loopback"),
    (["bgp", "set", *BGP_OK[:5], "127.0.0.1", *BGP_OK[6:]], "--remote_ip", "loopback"),
    (["bgp", "set", *BGP_OK[:3], "169.254.0.5", *BGP_OK[4:]], "--anycast_ip", "link-local"),
    (["bgp", "set", *BGP_OK[:-1], "0.0.0.0"], "--local_router_id", "RFC 6286"),
]  # fmt: skip


@pytest.mark.parametrize(("argv", "flag", "fragment"), REFUSED)
def test_refusals_name_the_flag_and_write_nothing(
    argv: list[str], flag: str, fragment: str, paths: NodePaths, capsys: pytest.CaptureFixture[str]
) -> None:
    assert escadm(["ha", "set", *HA_OK], paths) == 0
    assert escadm(["bgp", "set", *BGP_OK], paths) == 0
    before = paths.config_file.read_bytes()
    capsys.readouterr()
    assert escadm(argv, paths) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"escadm: {flag}: "), err
    assert fragment in err
    assert paths.config_file.read_bytes() == before


def test_an_extra_word_after_a_single_value_is_refused(
    paths: NodePaths, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["ha", "set", "--ha_node_list=", *NODES, "--kad_vip=", "192.168.0.250", "x.y"]
    assert escadm([*argv, "--kad_vif=", "eth0"], paths) == 2
    assert "unrecognized arguments: x.y" in capsys.readouterr().err
    assert not paths.config_file.exists()


def test_escadm_main_refuses_before_looking_at_the_host(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        escadm_cli.main(["ha", "set", "--kad_vip=", "--kad_vif", "eth0"])
    assert exc.value.code == 2
    assert capsys.readouterr().err.startswith("escadm: --kad_vip: ")


def test_ha_set_help_shows_the_guides_form(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        escadm_cli.main(["ha", "set", "--help"])
    assert exc.value.code == 0
    assert "--kad_vip= 192.0.2.254 --kad_vif= eth0" in capsys.readouterr().out
