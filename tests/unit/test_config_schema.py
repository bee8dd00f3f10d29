import tomllib
from pathlib import Path

import pytest

from esc.config.schema import EscConfig, Route, Vip, dump_config, load_config, parse_config
from esc.config.types import decimal_int, decimal_seconds
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
        ({"db_volume_id": "v", "db_volume_path": "/v"}, "ha.db_volume_path"),
        ({"db_volume_id": " "}, "ha.db_volume_id"),
        ({"db_volume_path": "db"}, "ha.db_volume_path"),
        ({"ha_mode": "cinder"}, "ha.ha_mode"),  # needs a volume
        ({"gateway_ip": "2001:db8::1"}, "ha.gateway_ip"),
        ({"gateway_ip": "192.0.2.100"}, "ha.gateway_ip"),
        ({"node_names": ["a", "a"]}, "ha.node_names"),
        ({"ha_node_list": ["192.0.2.10"]}, "ha.ha_node_list"),
        ({"ha_node_list": ["192.0.2.10", "192.0.2.11", "192.0.2.12"]}, "ha.ha_node_list"),
        ({"kad_vri": True}, "ha.kad_vri"),
        ({"kad_vri": 1.5}, "ha.kad_vri"),
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


@pytest.mark.parametrize(
    "value", [100, 0, 0.001, 0.015, 41, 40.96, -1, True, "nan", "fast", "1e-2", "0.2"]
)
def test_advert_int_outside_keepalived_vrrp_v3_is_refused(value: object) -> None:
    """VRRPv3 counts the interval in centiseconds, 1 to 4095."""
    with pytest.raises(ConfigError) as exc:
        parse_config(_ha(advert_int=value))
    assert exc.value.field == "ha.advert_int"
    assert "multiple of 0.01 between 0.01 and 40.95" in exc.value.message


@pytest.mark.parametrize(("value", "seconds"), [(0.01, 0.01), (40.95, 40.95), (1, 1.0)])
def test_advert_int_in_range(value: object, seconds: float) -> None:
    ha = parse_config(_ha(advert_int=value)).ha
    assert ha is not None and ha.advert_int == seconds


def test_advert_int_100_in_the_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "esc.toml"
    text = dump_config(parse_config(_ha())).replace("advert_int = 0.2", "advert_int = 100")
    assert "advert_int = 100" in text
    path.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert exc.value.field == "ha.advert_int"


@pytest.mark.parametrize(
    ("route", "field"),
    [
        ("203.0.113.0/24:[2001:db8::1]:eth1", "ha.routes"),
        (
            {"dest": "203.0.113.0/24", "gateway": "2001:db8::1", "iface": "eth1"},
            "ha.routes.0.gateway",
        ),
        ("[2001:db8:5::/48]:192.0.2.1:eth1", "ha.routes"),
    ],
)
def test_a_route_via_a_gateway_of_the_other_family_is_refused(route: object, field: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config(_ha(routes=[route]))
    assert exc.value.field == field
    assert "differ in family" in exc.value.message


def test_a_rule_over_several_fields_names_its_field_as_data() -> None:
    """The field comes from the rule's RuleError, not from the message's text."""
    with pytest.raises(ConfigError) as exc:
        parse_config({"manager": {"https_port": 9001}})
    assert (exc.value.field, exc.value.message) == (
        "manager.portal_port",
        "9001 is already the https_port",
    )


def test_kad_vri_is_a_number_not_text() -> None:
    """In the file it is a TOML integer; the flag's text is made one by escadm."""
    ha = parse_config(_ha(kad_vri=255)).ha
    assert ha is not None and ha.vrid == 255
    with pytest.raises(ConfigError) as exc:
        parse_config(_ha(kad_vri="7"))
    assert exc.value.field == "ha.kad_vri"


# Strict types: a value of another type is refused naming the field, never converted (before,
# pydantic's lax mode made `http_port = true` port 1, and "8080" port 8080).
STRICT_BAD = [
    ({"manager": {"http_port": True}}, "manager.http_port"),
    ({"manager": {"http_port": "8080"}}, "manager.http_port"),
    ({"manager": {"https_port": 8443.0}}, "manager.https_port"),
    ({"manager": {"portal_port": False}}, "manager.portal_port"),
    ({"manager": {"cert_file": 1}}, "manager.cert_file"),
    ({"database": {"port": True}}, "database.port"),
    ({"database": {"port": "5432"}}, "database.port"),
    ({"database": {"name": 3}}, "database.name"),
    ({"database": {"max_slot_wal_keep_size_mb": 4096.5}}, "database.max_slot_wal_keep_size_mb"),
    ({"agent": {"peer_port": True}}, "agent.peer_port"),
    ({"agent": {"monitor_port": "8008"}}, "agent.monitor_port"),
    ({"agent": {"monitor_port": 70000}}, "agent.monitor_port"),
    ({"agent": {"monitor_bind": "example.org"}}, "agent.monitor_bind"),
    ({"agent": {"cycle_s": True}}, "agent.cycle_s"),
    ({"agent": {"cycle_s": "0.2"}}, "agent.cycle_s"),
    ({"agent": {"health_failures": 3.0}}, "agent.health_failures"),
    ({"agent": {"peer_secret": 12345}}, "agent.peer_secret"),
    ({"replication": {"password": ["x"]}}, "replication.password"),
    ({"replication": {"standby_loss_grace_s": False}}, "replication.standby_loss_grace_s"),
    ({"node_name": 7}, "node_name"),
]


@pytest.mark.parametrize(("data", "field"), STRICT_BAD)
def test_a_value_of_another_type_is_refused_naming_the_field(
    data: dict[str, object], field: str
) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config(data)
    assert exc.value.field == field


@pytest.mark.parametrize(
    ("over", "field"),
    [
        ({"kad_vif": 3}, "ha.kad_vif"),
        ({"ha_node_list": [3232235530, 3232235531]}, "ha.ha_node_list.0"),
        ({"kad_vip": {"address": "192.0.2.100", "prefixlen": "24"}}, "ha.kad_vip.prefixlen"),
        ({"node_names": ["a", 2]}, "ha.node_names.1"),
        ({"db_volume_id": 42}, "ha.db_volume_id"),
        ({"routes": [{"dest": 0, "gateway": "192.0.2.1", "iface": "eth0"}]}, "ha.routes.0.dest"),
    ],
)
def test_ha_values_of_another_type_are_refused(over: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config(_ha(**over))
    assert exc.value.field == field


def test_bgp_values_of_another_type_are_refused() -> None:
    bgp = {
        "local_ip": "192.0.2.10",
        "anycast_ip": "203.0.113.1",
        "remote_ip": "192.0.2.1",
        "local_as": 65010,
        "remote_as": 65001,
        "local_router_id": "192.0.2.10",
    }
    assert parse_config({"bgp": bgp}).bgp is not None
    for key, value in [
        ("local_as", "65010"),
        ("remote_as", True),
        ("hold_time", True),
        ("hold_time", 9.0),
        ("reannounce_s", "5"),
        ("local_router_id", 3232235530),
        ("md5", 1234),
    ]:
        with pytest.raises(ConfigError) as exc:
            parse_config({"bgp": {**bgp, key: value}})
        assert exc.value.field == f"bgp.{key}", (key, value)


def test_a_toml_array_is_still_a_tuple_and_ints_are_floats(tmp_path: Path) -> None:
    """Strictness keeps what TOML itself writes: arrays for the tuple fields, an integer for
    seconds."""
    path = tmp_path / "esc.toml"
    text = dump_config(parse_config(_ha(node_names=["a", "b"])))
    assert "cycle_s = 0.2" in text
    path.write_text(text.replace("cycle_s = 0.2", "cycle_s = 1"))
    cfg = load_config(path)
    assert cfg.ha is not None and cfg.ha.node_names == ("a", "b")
    assert cfg.agent.cycle_s == 1.0


@pytest.mark.parametrize("plen", ["\u0663", "\uff11", "\u00b2", " 3", "+3", "0x3", ""])
def test_a_vip_prefix_length_is_ascii_digits(plen: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config(_ha(kad_vip=f"192.0.2.100/{plen}"))
    assert exc.value.field == "ha.kad_vip"
    assert "bad prefix length" in exc.value.message


QUORUM = {"quorum": "etcd", "witness": "192.0.2.30"}


@pytest.mark.parametrize(
    ("ha", "quorum", "field"),
    [
        ({"quorum": "etcd"}, None, "ha.witness"),  # no witness
        ({"witness": "192.0.2.30"}, None, "ha.witness"),  # a witness without quorum mode
        ({**QUORUM, "witness": "192.0.2.10"}, None, "ha.witness"),  # a node's address
        ({**QUORUM, "witness": "2001:db8::30"}, None, "ha.witness"),  # another family
        ({**QUORUM, "witness": "127.0.0.1"}, None, "ha.witness"),
        ({**QUORUM, "quorum": "zookeeper"}, None, "ha.quorum"),
        ({**QUORUM, "node_names": ["witness", "b"]}, None, "ha.node_names"),
        ({**QUORUM, "ha_mode": "cinder", "db_volume_id": "v"}, None, "ha.quorum"),
        ({}, {"lease_ttl_s": 3}, "quorum"),  # [quorum] without quorum mode: refused
        (QUORUM, {"lease_ttl_s": 1}, "quorum.lease_ttl_s"),
        (QUORUM, {"lease_ttl_s": 2, "election_ms": 1500}, "quorum.lease_ttl_s"),
        (QUORUM, {"election_ms": 200}, "quorum.election_ms"),  # < 5 heartbeats
        (QUORUM, {"margin_s": 1.0}, "quorum.margin_s"),  # half the 2 s lease
        (QUORUM, {"election_ms": 1000}, "quorum.lease_ttl_s"),  # an election outlasts it
        (QUORUM, {"lease_ttl_s": 3, "election_ms": 1000, "margin_s": 0.75}, "quorum.lease_ttl_s"),
        (QUORUM, {"margin_s": 0.3}, "quorum.margin_s"),  # under two 0.2 s agent cycles
        (QUORUM, {"peer_port": 2379}, "quorum.peer_port"),
        (QUORUM, {"client_port": 5432}, "quorum.client_port"),  # the database's
        (QUORUM, {"lease": 3}, "quorum.lease"),
    ],
)
def test_quorum_errors_name_the_field(
    ha: dict[str, object], quorum: dict[str, object] | None, field: str
) -> None:
    data = _ha(**ha)
    if quorum is not None:
        data["quorum"] = quorum
    with pytest.raises(ConfigError) as exc:
        parse_config(data)
    assert exc.value.field == field


def test_quorum_mode_round_trips_with_its_defaults() -> None:
    cfg = parse_config(_ha(**QUORUM))
    assert cfg.ha is not None and cfg.ha.quorum == "etcd" and str(cfg.ha.witness) == "192.0.2.30"
    assert (cfg.quorum_cfg.lease_ttl_s, cfg.quorum_cfg.margin_s) == (2, 0.5)
    assert parse_config(tomllib.loads(dump_config(cfg))) == cfg
    tuned = parse_config({**_ha(**QUORUM), "quorum": {"lease_ttl_s": 4, "election_ms": 1000}})
    assert tuned.quorum_cfg.lease_ttl_s == 4


@pytest.mark.parametrize(
    "text", ["\u00b2", "\u0663", "\uff11", " 3", "3 ", "0x3", "", "+3", "3.0", "1_0", "-", "--3"]
)
def test_decimal_int_takes_ascii_digits_only(text: str) -> None:
    with pytest.raises(ValueError, match="is not a decimal integer"):
        decimal_int(text)
    with pytest.raises(ValueError, match="is not a decimal integer"):
        decimal_int(text, signed=True)


def test_decimal_int_and_seconds() -> None:
    assert decimal_int("0") == 0 and decimal_int("007") == 7
    assert decimal_int("9" * 20) == 10**20 - 1
    with pytest.raises(ValueError):
        decimal_int("1" * 21)  # beyond any field, and int() of thousands of digits is slow
    with pytest.raises(ValueError):
        decimal_int("-3")  # no flag takes a negative number
    assert decimal_int("-3", signed=True) == -3
    assert decimal_seconds("30") == 30.0 and decimal_seconds("0.25") == 0.25
    for text in ["nan", "inf", "1e3", ".5", "5.", "-1", " 1", "\u0661"]:
        with pytest.raises(ValueError, match="is not a number of seconds"):
            decimal_seconds(text)


@pytest.mark.parametrize(
    ("data", "taken"),
    [
        ({"agent": {"monitor_port": 7400}}, "agent.peer_port"),
        ({"agent": {"monitor_port": 5432}}, "database.port"),
        ({"agent": {"monitor_port": 9001}}, "manager.portal_port"),
        ({"agent": {"monitor_port": 8080}, "manager": {"http_port": 8080}}, "manager.http_port"),
    ],
)
def test_the_monitoring_port_must_be_free(data: dict[str, object], taken: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config(data)
    assert exc.value.field == "agent.monitor_port" and taken in str(exc.value)


def test_the_monitoring_listener_can_be_turned_off() -> None:
    assert parse_config({"agent": {"monitor_port": 0}}).agent.monitor_port == 0
    assert parse_config({}).agent.monitor_port == 8008
