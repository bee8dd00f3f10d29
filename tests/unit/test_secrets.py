from __future__ import annotations

import pytest

from esc.cli.secrets_cmd import PREFIX, export_line, generate_missing, import_line
from esc.config.schema import EscConfig, parse_config
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
