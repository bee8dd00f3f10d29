"""`escadm reload` and the pair's secrets: a changed secret is refused naming it, never
silently kept (the agent reads both at its start)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest

from esc.agent.history import History
from esc.agent.loop import Agent, live_change_refusal
from esc.cli.secrets_cmd import generate_missing
from esc.config.schema import EscConfig, NodePaths, parse_config, save_config
from esc.core.facts import DecideConfig
from esc.drivers.fake import FakeDatabase
from esc.model import DbRole

HA = {"ha_node_list": ["192.0.2.10", "192.0.2.11"], "kad_vip": "192.0.2.100", "kad_vif": "eth0"}


def _pair() -> EscConfig:
    cfg, _ = generate_missing(parse_config({"ha": HA}))
    return cfg


@pytest.mark.parametrize(
    ("section", "key", "field"),
    [
        ("agent", "peer_secret", "agent.peer_secret"),
        ("replication", "password", "replication.password"),
    ],
)
def test_a_changed_secret_is_refused_naming_it(section: str, key: str, field: str) -> None:
    old = _pair()
    data = old.model_dump(mode="json")
    data[section][key] = "N" * 43
    refusal = live_change_refusal(old, parse_config(data))
    assert refusal is not None and refusal.startswith(f"{field} ")
    assert "both nodes" in refusal
    assert "N" * 43 not in refusal and getattr(getattr(old, section), key) not in refusal


def test_unchanged_secrets_and_other_live_settings_reload() -> None:
    old = _pair()
    data = old.model_dump(mode="json")
    data["replication"]["on_standby_loss"] = "strict"
    data["ha"]["advert_int"] = 0.3
    assert live_change_refusal(old, parse_config(data)) is None
    assert live_change_refusal(old, old) is None


class _Vrrp:
    def __init__(self) -> None:
        self.reloads = 0

    def reload(self, cfg: EscConfig) -> bool:
        self.reloads += 1
        return True


class _Service:
    def __init__(self) -> None:
        self.configs: list[EscConfig] = []

    def reconfigure(self, cfg: EscConfig) -> None:
        self.configs.append(cfg)


def test_escadm_reload_refuses_a_rotated_secret_and_keeps_running_with_the_old(
    tmp_path: Path,
) -> None:
    """Through the agent's reload request: refused naming the field, nothing applied."""
    old = _pair()
    paths = NodePaths(tmp_path)
    vrrp, service = _Vrrp(), _Service()
    agent = Agent(
        cfg=old,
        paths=paths,
        dcfg=DecideConfig(node_name="esc-ha-0", peer_name="esc-ha-1", first_node=True),
        peer_host="192.0.2.11",
        vrrp=cast(Any, vrrp),
        vip=cast(Any, None),
        db=FakeDatabase("esc-ha-0", DbRole.STANDBY),
        service=cast(Any, service),
        peer=cast(Any, None),
        gateway=None,
        history=History(tmp_path / "history.jsonl"),
    )
    data = old.model_dump(mode="json")
    data["agent"]["peer_secret"] = "N" * 43
    save_config(parse_config(data), paths.config_file)
    ok, message = agent._reload()
    assert not ok
    assert message.startswith("reload refused: agent.peer_secret ")
    assert message.endswith("cannot change live; restart the agent")
    assert agent.cfg == old and vrrp.reloads == 0 and service.configs == []
    save_config(old, paths.config_file)  # back as it runs: a reload applies
    assert agent._reload()[0] and vrrp.reloads == 1
    assert service.configs == [old]  # and reaches the manager
