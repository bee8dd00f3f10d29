"""ha.routes: the plan that makes the agent's own routes (proto 222) exactly the config."""

from __future__ import annotations

from esc.agent.routes import PROTO, Present, parse_ip_route_json, plan
from esc.config.schema import Route

R1 = Route.parse("[2001:db8:300::/64]:[2001:db8:100::1]:eth0")
R2 = Route.parse("203.0.113.128/25:198.51.100.1:eth0")


def test_desired_routes_are_replaced_and_stale_ones_deleted() -> None:
    present = [
        Present("2001:db8:300::/64", "2001:db8:100::1", "eth0"),
        Present("192.0.2.128/25", None, "eth1"),
    ]
    cmds = plan((R1, R2), present)
    assert cmds == [
        ["ip", "route", "del", "192.0.2.128/25", "proto", PROTO],
        [
            "ip",
            "route",
            "replace",
            "2001:db8:300::/64",
            "via",
            "2001:db8:100::1",
            "dev",
            "eth0",
            "proto",
            PROTO,
        ],
        [
            "ip",
            "route",
            "replace",
            "203.0.113.128/25",
            "via",
            "198.51.100.1",
            "dev",
            "eth0",
            "proto",
            PROTO,
        ],
    ]


def test_no_routes_configured_removes_ours_only() -> None:
    assert plan((), [Present("203.0.113.128/25", "198.51.100.1", "eth0")]) == [
        ["ip", "route", "del", "203.0.113.128/25", "proto", PROTO]
    ]
    assert plan((), []) == []


def test_parse_ip_json_normalises_host_routes() -> None:
    text = (
        '[{"dst":"203.0.113.7","gateway":"198.51.100.1","dev":"eth0","protocol":"222"},'
        '{"dst":"2001:db8:300::/64","gateway":"2001:db8:100::1","dev":"eth0"},'
        '{"dst":"default","gateway":"198.51.100.1","dev":"eth0"}]'
    )
    assert parse_ip_route_json(text) == [
        Present("203.0.113.7/32", "198.51.100.1", "eth0"),
        Present("2001:db8:300::/64", "2001:db8:100::1", "eth0"),
    ]
    assert parse_ip_route_json("") == []
