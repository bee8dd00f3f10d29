"""Any unicast address an operator owns is accepted; what can never work is refused, naming the
field. The documentation ranges are the lab's and the tests' rule only (test_topology.py)."""

from __future__ import annotations

import tomllib
from ipaddress import ip_address, ip_network
from typing import Any

import pytest

from esc.addresses import Use, check_address, is_allowed, parse_ip, subnet_own
from esc.config.schema import dump_config, parse_config
from esc.errors import ConfigError

ANY = Use(loopback=None, link_local_v4=None, link_local_v6=None, unspecified=None)
STRICT = Use(loopback="no", link_local_v4="no", link_local_v6="no")


def _cfg(ha: dict[str, Any] | None = None, bgp: dict[str, Any] | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {"node_name": "esc-ha-0"}
    if ha is not None:
        data["ha"] = {"kad_vif": "eth0", **ha}
    if bgp is not None:
        data["bgp"] = {"local_as": 65010, "remote_as": 65001, **bgp}
    return data


# --- the primitive -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("224.0.0.18", "multicast"),
        ("ff02::12", "multicast"),
        ("255.255.255.255", "broadcast"),
        ("::ffff:192.168.0.1", "write 192.168.0.1"),
    ],
)
def test_never_unicast_is_refused_for_every_use(text: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        check_address(ip_address(text), ANY)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("127.0.0.1", "loopback"),
        ("127.1.2.3", "loopback"),
        ("::1", "loopback"),
        ("169.254.1.1", "169.254.0.0/16"),
        ("fe80::1", "fe80::/10"),
    ],
)
def test_per_use_kinds_are_refused_only_where_the_use_says(text: str, fragment: str) -> None:
    addr = ip_address(text)
    assert check_address(addr, ANY) == addr
    with pytest.raises(ValueError, match=fragment):
        check_address(addr, STRICT)


def test_a_zone_is_refused() -> None:
    with pytest.raises(ValueError, match="zone"):
        parse_ip("fe80::1%eth0")
    with pytest.raises(ValueError, match="zone"):
        check_address(ip_address("fe80::1%eth0"), ANY)


def test_documentation_ranges_are_only_the_labs_rule() -> None:
    assert is_allowed(ip_address("192.0.2.1")) and not is_allowed(ip_address("10.0.0.1"))
    for text in ("10.0.0.1", "172.16.0.1", "192.168.0.1", "2001:cc0::1", "8.8.8.8"):
        assert check_address(ip_address(text), STRICT) == ip_address(text)


# --- accepted in the schema --------------------------------------------------------------------

ACCEPTED = [
    # the ESC install guide's own examples
    _cfg(
        {
            "ha_node_list": ["192.168.0.239", "192.168.0.243"],
            "kad_vip": "[2001:cc0:2020::fc/48]:eth0",
            "routes": ["10.85.103.0/24:192.168.0.1:eth1"],
        }
    ),
    _cfg(
        {
            "ha_node_list": ["10.0.0.10", "10.0.0.11"],
            "kad_vip": "10.0.0.100/24",
            "gateway_ip": "10.0.0.1",
            "routes": ["0.0.0.0/0:10.0.0.1:eth0", "172.16.0.0/12:169.254.0.1:eth1"],
        },
        {
            "local_ip": "10.0.0.10",
            "anycast_ip": "172.16.200.1",
            "remote_ip": "10.0.0.1",
            "local_router_id": "10.0.0.10",
        },
    ),
    _cfg(
        {
            "ha_node_list": ["172.16.5.10", "172.16.5.11"],
            "kad_vip": "172.16.5.100",
            "gateway_ip": "169.254.0.1",  # pinged without an interface: fine in IPv4
        },
        # BGP over IPv4 link-local, as cloud peerings do
        {
            "local_ip": "169.254.10.2",
            "anycast_ip": "172.16.200.1",
            "remote_ip": "169.254.10.1",
            "local_router_id": "172.16.5.10",
        },
    ),
    _cfg(
        {
            "ha_node_list": ["2001:cc0:2020::10", "2001:cc0:2020::11"],
            "kad_vip": "2001:cc0:2020::fc",
            "gateway_ip": "2001:cc0:2020::1",
            "routes": ["[2001:cc0:1::/48]:[fe80::1]:eth0"],  # the route names its interface
        },
        {
            "local_ip": "2001:cc0:2020::10",
            "anycast_ip": "2001:cc0:ffff::1",
            "remote_ip": "2001:cc0:2020::1",
            "local_router_id": "192.168.0.239",
        },
    ),
    _cfg({"ha_node_list": ["169.254.7.10", "169.254.7.11"], "kad_vip": "192.168.0.100"}),
    {"manager": {"bind": "192.168.0.239"}},
    {"manager": {"bind": "127.0.0.1"}},
    {"manager": {"bind": "0.0.0.0"}},
]


@pytest.mark.parametrize("data", ACCEPTED)
def test_any_unicast_address_is_accepted(data: dict[str, Any]) -> None:
    cfg = parse_config(data)
    assert parse_config(tomllib.loads(dump_config(cfg))) == cfg


# --- refused in the schema, naming the field ---------------------------------------------------

NODES = {"ha_node_list": ["192.168.0.239", "192.168.0.243"], "kad_vip": "192.168.0.250"}
BGP = {
    "local_ip": "10.85.103.10",
    "anycast_ip": "172.16.200.1",
    "remote_ip": "10.85.103.1",
    "local_router_id": "10.85.103.10",
}

REFUSED = [
    # (ha overrides, bgp overrides, field, fragment of the message)
    ({"ha_node_list": ["127.0.0.1", "192.168.0.243"]}, None, "ha.ha_node_list.0", "loopback"),
    ({"ha_node_list": ["::1", "2001:cc0::11"]}, None, "ha.ha_node_list.0", "loopback"),
    ({"ha_node_list": ["0.0.0.0", "192.168.0.243"]}, None, "ha.ha_node_list.0", "unspecified"),
    ({"ha_node_list": ["192.168.0.239", "224.0.0.18"]}, None, "ha.ha_node_list.1", "multicast"),
    ({"ha_node_list": ["192.168.0.239", "255.255.255.255"]}, None, "ha.ha_node_list.1",
     "broadcast"),
    ({"ha_node_list": ["fe80::10", "fe80::11"]}, None, "ha.ha_node_list.0", "zone"),
    ({"ha_node_list": ["192.168.0.239", "192.168.0.239"]}, None, "ha.ha_node_list", "differ"),
    ({"ha_node_list": ["192.168.0.239", "2001:cc0::11"]}, None, "ha.ha_node_list", "family"),
    ({"kad_vip": "127.0.0.1"}, None, "ha.kad_vip", "loopback"),
    ({"kad_vip": "0.0.0.0"}, None, "ha.kad_vip", "unspecified"),
    ({"kad_vip": "224.0.0.1"}, None, "ha.kad_vip", "multicast"),
    ({"kad_vip": "255.255.255.255"}, None, "ha.kad_vip", "broadcast"),
    ({"kad_vip": "169.254.0.100"}, None, "ha.kad_vip", "RFC 3927"),
    ({"kad_vip": "[fe80::fc]:eth0"}, None, "ha.kad_vip", "link-local"),
    ({"kad_vip": "192.168.0.255/24"}, None, "ha.kad_vip", "broadcast address of"),
    ({"kad_vip": "192.168.0.0/24"}, None, "ha.kad_vip", "network address of"),
    ({"kad_vip": "192.168.0.243"}, None, "ha.kad_vip", "node addresses"),
    ({"ha_node_list": ["2001:cc0::10", "2001:cc0::11"], "kad_vip": "192.168.0.250"}, None,
     "ha.kad_vip", "IPv4 VIP needs IPv4"),
    ({"gateway_ip": "127.0.0.1"}, None, "ha.gateway_ip", "loopback"),
    ({"gateway_ip": "224.0.0.2"}, None, "ha.gateway_ip", "multicast"),
    ({"kad_vip": "2001:cc0::fc", "gateway_ip": "fe80::1"}, None, "ha.gateway_ip", "probe"),
    ({"gateway_ip": "2001:cc0::1"}, None, "ha.gateway_ip", "family"),
    ({"gateway_ip": "192.168.0.250"}, None, "ha.gateway_ip", "not the VIP"),
    ({"gateway_ip": "192.168.0.243"}, None, "ha.gateway_ip", "node address"),
    ({"routes": ["10.85.103.0/24:127.0.0.1:eth1"]}, None, "ha.routes", "loopback"),
    ({"routes": ["10.85.103.0/24:0.0.0.0:eth1"]}, None, "ha.routes", "unspecified"),
    ({"routes": ["224.0.0.0/4:192.168.0.1:eth0"]}, None, "ha.routes", "multicast network"),
    ({"routes": ["127.0.0.0/8:192.168.0.1:eth0"]}, None, "ha.routes", "loopback network"),
    ({"routes": ["10.85.103.0/24:[2001:cc0::1]:eth1"]}, None, "ha.routes", "family"),
    ({}, {"local_ip": "127.0.0.1"}, "bgp.local_ip", "loopback"),
    ({}, {"remote_ip": "127.0.0.1"}, "bgp.remote_ip", "loopback"),
    ({}, {"remote_ip": "0.0.0.0"}, "bgp.remote_ip", "unspecified"),
    ({}, {"local_ip": "fe80::10", "remote_ip": "fe80::1"}, "bgp.local_ip", "zone"),
    ({}, {"remote_ip": "10.85.103.10"}, "bgp.remote_ip", "differ"),
    ({}, {"remote_ip": "2001:cc0::1"}, "bgp.remote_ip", "family"),
    ({}, {"anycast_ip": "127.0.0.5"}, "bgp.anycast_ip", "loopback"),
    ({}, {"anycast_ip": "169.254.0.5"}, "bgp.anycast_ip", "never forward"),
    ({}, {"anycast_ip": "224.0.0.5"}, "bgp.anycast_ip", "multicast"),
    ({}, {"anycast_ip": "10.85.103.1"}, "bgp.anycast_ip", "differ"),
    ({}, {"anycast_ip": "2001:cc0::1"}, "bgp.anycast_ip", "family"),
    ({}, {"local_router_id": "0.0.0.0"}, "bgp.local_router_id", "RFC 6286"),
]  # fmt: skip


@pytest.mark.parametrize(("ha", "bgp", "field", "fragment"), REFUSED)
def test_what_can_never_work_is_refused_naming_the_field(
    ha: dict[str, Any], bgp: dict[str, Any] | None, field: str, fragment: str
) -> None:
    data = _cfg({**NODES, **ha}, None if bgp is None else {**BGP, **bgp})
    with pytest.raises(ConfigError) as err:
        parse_config(data)
    assert err.value.field == field
    assert fragment in err.value.message


@pytest.mark.parametrize(
    ("bind", "fragment"),
    [("224.0.0.1", "multicast"), ("fe80::1", "zone"), ("255.255.255.255", "broadcast")],
)
def test_listening_address_refusals(bind: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({"manager": {"bind": bind}})
    assert err.value.field == "manager.bind"
    assert fragment in err.value.message


@pytest.mark.parametrize(
    ("addr", "net", "want"),
    [
        ("192.168.0.0", "192.168.0.0/24", "network"),
        ("192.168.0.255", "192.168.0.0/24", "broadcast"),
        ("192.168.0.3", "192.168.0.0/30", "broadcast"),
        ("192.168.0.1", "192.168.0.0/24", None),
        ("192.168.0.0", "192.168.0.0/31", None),  # RFC 3021: both addresses are hosts'
        ("2001:cc0::", "2001:cc0::/64", None),
    ],
)
def test_subnet_own(addr: str, net: str, want: str | None) -> None:
    assert subnet_own(ip_address(addr), ip_network(net)) == want
