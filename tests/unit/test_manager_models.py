"""Pure logic of escmanager's API: body validation, ids, callback URLs, request comparison."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from esc.config.schema import EscConfig, parse_config
from esc.errors import ConfigError
from esc.manager.models import (
    DeploymentCreate,
    TenantCreate,
    check_callback_url,
    first_difference,
    header_safe,
    pick_transaction_id,
)
from esc.manager.worker import WorkerTuning, callback_delay


def group(**kw: Any) -> dict[str, Any]:
    return {"name": "g", "image": "cirros", "flavor": "small", "count": 2} | kw


def field_of(exc: ValidationError) -> str:
    return ".".join(str(p) for p in exc.errors()[0]["loc"])


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "name"),
        ({"name": "-x"}, "name"),
        ({"name": "a" * 64}, "name"),
        ({"name": "a", "description": "x\x00"}, "description"),
        ({"name": "a", "extra": 1}, "extra"),
    ],
)
def test_tenant_body_errors_name_the_field(body: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as err:
        TenantCreate.model_validate(body)
    assert field_of(err.value) == field


def test_deployment_vm_names_in_order() -> None:
    d = DeploymentCreate.model_validate(
        {"tenant": "t", "name": "web", "vm_groups": [group(name="a"), group(name="b", count=1)]}
    )
    assert d.vm_names() == [("web_a_1", "a"), ("web_a_2", "a"), ("web_b_1", "b")]


@pytest.mark.parametrize(
    ("groups", "fragment"),
    [
        ([], "vm_groups"),
        ([group(), group()], "duplicate group name"),
        ([group(name=f"g{i}", count=50) for i in range(5)], "at most 200"),
        ([group(count=0)], "vm_groups.0.count"),
        ([group(networks=["bad net"])], "vm_groups.0.networks.0"),
        ([group(kpi={"type": "TCPPing"})], "port is required"),
        ([group(rules=[{"event": "VM_ALIVE", "action": "reboot the world"}])], "action"),
        ([group(image="")], "vm_groups.0.image"),
    ],
)
def test_deployment_body_errors(groups: list[dict[str, Any]], fragment: str) -> None:
    with pytest.raises(ValidationError) as err:
        DeploymentCreate.model_validate({"tenant": "t", "name": "d", "vm_groups": groups})
    text = field_of(err.value) + " " + str(err.value)
    assert fragment in text


def test_transaction_ids() -> None:
    assert pick_transaction_id(None, None) is None
    assert pick_transaction_id("a.b:c-1_2", None) == "a.b:c-1_2"
    assert pick_transaction_id(None, "k") == "k"
    assert pick_transaction_id("k", "k") == "k"
    for bad in ("", "x" * 129, "a b", "a/b", "é"):
        with pytest.raises(ValueError, match="ESC-Transaction-Id"):
            pick_transaction_id(bad, None)
    with pytest.raises(ValueError, match="Idempotency-Key"):
        pick_transaction_id(None, "a\nb")
    with pytest.raises(ValueError, match="differ"):
        pick_transaction_id("a", "b")
    assert pick_transaction_id("x" * 128, None) == "x" * 128


@pytest.mark.parametrize(
    "url", ["http://192.0.2.1/cb", "https://[2001:db8::1]:8443/x?y=1", "http://orchestrator:80/a"]
)
def test_callback_urls_accepted(url: str) -> None:
    assert check_callback_url(url) == url


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ftp://192.0.2.1/x", "scheme"),
        ("http:///path", "no host"),
        ("http://192.0.2.1/a\r\nX-Evil: 1", "control"),
        ("http://192.0.2.1/a b", "spaces"),
        ("http://u:p@192.0.2.1/", "credentials"),
        ("http://192.0.2.1:99999/", "valid URL"),
        ("http://192.0.2.1/" + "a" * 2048, "longer"),
        ("/relative", "scheme"),
    ],
)
def test_callback_urls_refused(url: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        check_callback_url(url)


def test_first_difference_names_the_field() -> None:
    a = {"name": "x", "vm_groups": [{"count": 1, "kpi": {"type": "ICMPPing"}}]}
    assert first_difference(a, a) is None
    b = {"name": "x", "vm_groups": [{"count": 2, "kpi": {"type": "ICMPPing"}}]}
    assert first_difference(a, b) == "vm_groups.0.count"
    assert first_difference(a, {"name": "x"}) == "vm_groups"
    assert first_difference({"a": [1]}, {"a": [1, 2]}) == "a"
    assert first_difference(None, {"a": 1}) == "body"
    assert first_difference({"a": 1}, {"a": True}) == "a"  # 1 == True, but not the same request


def test_header_safe() -> None:
    assert header_safe("VM x:\nboom\r\n") == "VM x: boom"
    assert header_safe("a" * 500) == "a" * 200
    assert header_safe("naïve ☃") == "naïve ?"


def test_callback_backoff_is_capped() -> None:
    t = WorkerTuning(callback_backoff_s=0.5, callback_backoff_max_s=30)
    assert [callback_delay(n, t) for n in (1, 2, 3)] == [0.5, 1.0, 2.0]
    assert callback_delay(50, t) == 30


def test_manager_config_defaults_and_validation() -> None:
    m = EscConfig().manager
    assert (str(m.bind), m.https_port, m.http_port, m.vim) == ("::", 8443, None, "fake")
    m = parse_config({"manager": {"bind": "127.0.0.1", "http_port": 8080}}).manager
    assert (str(m.bind), m.http_port) == ("127.0.0.1", 8080)
    with pytest.raises(ConfigError, match=r"manager\.https_port"):
        parse_config({"manager": {"https_port": 0}})
    with pytest.raises(ConfigError, match=r"manager\.cert_file"):
        parse_config({"manager": {"cert_file": "/etc/a\nb"}})
    with pytest.raises(ConfigError, match=r"manager\.bind"):
        parse_config({"manager": {"bind": "example.org"}})


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"count": True}, "vm_groups.0.count"),  # JSON true is not the integer 1
        ({"count": "2"}, "vm_groups.0.count"),
        ({"count": 2.0}, "vm_groups.0.count"),
        ({"kpi": {"type": "TCPPing", "port": True}}, "vm_groups.0.kpi.port"),
        ({"kpi": {"poll_interval_s": "5"}}, "vm_groups.0.kpi.poll_interval_s"),
        ({"name": 5}, "vm_groups.0.name"),
        ({"networks": "net"}, "vm_groups.0.networks"),
        ({"image": ["cirros"]}, "vm_groups.0.image"),
    ],
)
def test_body_types_are_strict(kw: dict[str, Any], field: str) -> None:
    body = {"tenant": "t", "name": "web", "vm_groups": [group(**kw)]}
    with pytest.raises(ValidationError) as err:
        DeploymentCreate.model_validate(body)
    assert field_of(err.value) == field
    with pytest.raises(ValidationError) as err:
        TenantCreate.model_validate({"name": "a", "description": 5})
    assert field_of(err.value) == "description"
    ok = DeploymentCreate.model_validate({"tenant": "t", "name": "web", "vm_groups": [group()]})
    assert ok.vm_groups[0].count == 2
