import tomllib

import pytest

from esc.config.schema import EscConfig, Route, Vip, dump_config, parse_config
from esc.errors import ConfigError


@pytest.mark.parametrize(
    ("text", "addr", "plen", "iface"),
    [
        ("192.0.2.254", "192.0.2.254", None, None),
        ("192.0.2.254:eth2", "192.0.2.254", None, "eth2"),
        ("192.0.2.254/24:eth2", "192.0.2.254", 24, "eth2"),
        ("[2001:db8::fc/48]:eth0", "2001:db8::fc", 48, "eth0"),
        ("2001:db8::fc", "2001:db8::fc", None, None),
        ("[2001:db8::fc]", "2001:db8::fc", None, None),
        # the ESC install guide's own, and private ranges
        ("[2001:cc0:2020::fc/48]:eth0", "2001:cc0:2020::fc", 48, "eth0"),
        ("10.85.103.254/24:eth1", "10.85.103.254", 24, "eth1"),
        ("172.16.0.100", "172.16.0.100", None, None),
        ("192.168.0.250:eth0", "192.168.0.250", None, "eth0"),
    ],
)
def test_vip_seed_forms(text: str, addr: str, plen: int | None, iface: str | None) -> None:
    vip = Vip.parse(text)
    assert (str(vip.address), vip.prefixlen, vip.iface) == (addr, plen, iface)
    assert Vip.parse(str(vip)) == vip


@pytest.mark.parametrize(
    "text", ["127.0.0.1", "192.0.2.254:eth0\nx", "[2001:db8::fc/48", "192.0.2.1/33", "nope"]
)
def test_vip_bad_forms(text: str) -> None:
    with pytest.raises(ValueError):
        Vip.parse(text)


def test_route_parse() -> None:
    r = Route.parse("198.51.100.0/24:192.0.2.1:eth0")
    assert (r.dest, str(r.gateway), r.iface) == ("198.51.100.0/24", "192.0.2.1", "eth0")


def _ha(**over: object) -> dict[str, object]:
    base: dict[str, object] = {
        "ha_node_list": ["192.0.2.10", "192.0.2.11"],
        "kad_vip": "192.0.2.100",
        "kad_vif": "eth0",
    }
    base.update(over)
    return {"node_name": "esc-ha-0", "ha": base}


@pytest.mark.parametrize(
    ("over", "field"),
    [
        ({"kad_vri": 0}, "ha.kad_vri"),
        ({"kad_vri": 256}, "ha.kad_vri"),
        ({"kad_vip": "192.0.2.10"}, "ha.kad_vip"),
        ({"ha_node_list": ["192.0.2.10", "2001:db8::1"]}, "ha.ha_node_list"),
        ({"ha_node_list": ["192.0.2.10", "127.0.0.1"]}, "ha.ha_node_list.1"),
        ({"db_volume_id": "v", "db_volume_path": "/v"}, "ha"),  # no single field to name
        ({"kad_vif": "eth0\n"}, "ha.kad_vif"),
        ({"ha_mode": "raid"}, "ha.ha_mode"),
    ],
)
def test_errors_name_the_field(over: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config(_ha(**over))
    assert exc.value.field == field


def test_vrid_defaults_to_vip_last_byte_and_round_trips() -> None:
    cfg = parse_config(_ha())
    assert cfg.ha is not None and cfg.ha.vrid == 100
    assert parse_config(tomllib.loads(dump_config(cfg))) == cfg
    assert EscConfig().ha is None
