"""agent_memory.json: the outdated and forced flags survive a restart, and a file that cannot
be trusted keeps the node FAULT (naming the file, shown by `escadm status`) instead of silently
resetting them: an outdated standby that forgot it is outdated could be promoted."""

from __future__ import annotations

import ipaddress
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from esc.agent import main as agent_main
from esc.agent.memory import MEMORY_FILE, load_memory, memory_text
from esc.config.schema import NodePaths, parse_config
from esc.errors import ConfigError
from esc.host import FakeHostFacts
from esc.model import Memory, NodeState


def test_the_persisted_flags_round_trip(tmp_path: Path) -> None:
    path = tmp_path / MEMORY_FILE
    mem = Memory(
        state=NodeState.BACKUP, forced=True, self_outdated_from=0x3000060, served_timeline=3
    )
    path.write_text(memory_text(mem))
    assert load_memory(path) == Memory(forced=True, self_outdated_from=0x3000060, served_timeline=3)
    assert load_memory(tmp_path / "absent.json") == Memory()  # a first start


def test_the_exposure_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / MEMORY_FILE
    mem = Memory(peer_outdated_from=5, alone_since=1.7e9 + 0.25, alone_from_xid=750)
    path.write_text(memory_text(mem))
    assert load_memory(path) == mem


def test_a_file_an_older_agent_wrote_has_no_served_timeline_and_loads(tmp_path: Path) -> None:
    """Upgraded in place: "not known", which counts as served (core/facts.served_current)."""
    path = tmp_path / MEMORY_FILE
    path.write_text('{"forced": false, "peer_outdated_from": 5, "self_outdated_from": null}\n')
    assert load_memory(path) == Memory(peer_outdated_from=5, served_timeline=None)


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("", "not valid JSON"),  # an empty file
        ('{"forced": false, "peer_outdated_from": null, "self_outd', "not valid JSON"),  # torn
        (b"\xff\xfe", "not valid JSON"),  # not even UTF-8
        ("[]", "not a JSON object"),
        ('{"forced": false, "peer_outdated_from": null}', "self_outdated_from: missing"),
        (
            '{"forced": "no", "peer_outdated_from": null, "self_outdated_from": 5}',
            "forced: 'no' is not true or false",
        ),
        (
            '{"forced": false, "peer_outdated_from": null, "self_outdated_from": "0/3000060"}',
            "self_outdated_from: '0/3000060' is not an LSN",
        ),
        (
            '{"forced": false, "peer_outdated_from": true, "self_outdated_from": null}',
            "peer_outdated_from: True is not an LSN",
        ),
        (
            '{"forced": false, "peer_outdated_from": -1, "self_outdated_from": null}',
            "peer_outdated_from: -1 is not an LSN",
        ),
        (
            '{"forced": false, "peer_outdated_from": null, "self_outdated_from": null, '
            '"served_timeline": "2"}',
            "served_timeline: '2' is not a timeline",
        ),
        (
            '{"forced": false, "peer_outdated_from": 5, "self_outdated_from": null, '
            '"alone_since": NaN}',
            "alone_since: nan is not a time",
        ),
        (
            '{"forced": false, "peer_outdated_from": 5, "self_outdated_from": null, '
            '"alone_from_xid": 1.5}',
            "alone_from_xid: 1.5 is not a transaction id",
        ),
    ],
)
def test_a_corrupt_file_is_refused_naming_it_and_never_reset(
    tmp_path: Path, text: str | bytes, named: str
) -> None:
    path = tmp_path / MEMORY_FILE
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    before = path.read_bytes()
    with pytest.raises(ConfigError) as info:
        load_memory(path)
    assert info.value.field == str(path)
    assert named in info.value.message and "remove it only if" in info.value.message
    assert path.read_bytes() == before  # left for the operator, not rewritten


def test_an_unreadable_file_is_refused_too(tmp_path: Path) -> None:
    (tmp_path / MEMORY_FILE).mkdir()  # EISDIR: the old loader took it for "no memory"
    with pytest.raises(ConfigError, match="cannot be read"):
        load_memory(tmp_path / MEMORY_FILE)


@pytest.fixture
def paths() -> Iterator[NodePaths]:
    with tempfile.TemporaryDirectory(prefix="esc", dir="/tmp") as d:
        p = NodePaths(Path(d))
        for sub in p.all_dirs():
            sub.mkdir(parents=True)
        yield p


def test_the_agent_starts_fault_naming_the_file(paths: NodePaths) -> None:
    """An outdated standby's memory, torn: build_agent no longer refuses; the agent runs FAULT
    with the reason naming the file (test_agent_faults: never rewritten, no role taken,
    `escadm status` shows it)."""
    cfg = parse_config(
        {"ha": {"ha_node_list": ["192.0.2.10", "192.0.2.11"], "kad_vip": "192.0.2.100",
                "kad_vif": "eth0"}}
    )  # fmt: skip
    host = FakeHostFacts({"eth0": [ipaddress.ip_interface("192.0.2.11/24")]})
    memory = paths.data_dir / MEMORY_FILE
    memory.write_text(memory_text(Memory(self_outdated_from=0x3000060))[:30])
    agent = agent_main.build_agent(cfg, paths, host)
    assert agent.memory_fault is not None
    assert agent.memory_fault.startswith(f"{memory}: not valid JSON")
    assert agent.fault() == agent.memory_fault
    assert agent.mem == Memory()  # in memory only: the file is the operator's


def test_building_the_agent_starts_nothing(paths: NodePaths) -> None:
    """Construction has no side effects: no thread, no socket, no listener; ``start()``
    starts the local and peer APIs, the monitoring listener, the peer poller and the health
    checks."""
    cfg = parse_config(
        {"ha": {"ha_node_list": ["192.0.2.10", "192.0.2.11"], "kad_vip": "192.0.2.100",
                "kad_vif": "eth0"}}
    )  # fmt: skip
    host = FakeHostFacts({"eth0": [ipaddress.ip_interface("192.0.2.11/24")]})
    threads = set(threading.enumerate())
    agent = agent_main.build_agent(cfg, paths, host)
    assert set(threading.enumerate()) == threads
    assert not (paths.run_dir / "agent.sock").exists()
    assert not paths.agent_status_socket.exists()
    # local API, its read-only twin for the portal, peer API, the monitoring listener, poller,
    # health checks (no gateway)
    assert len(agent.starters) == 6
    assert agent.endpoints is not None
    assert agent.endpoints.primary == "https://192.0.2.11:8008/primary"
    assert agent.endpoints.metrics == "https://192.0.2.11:8008/metrics"
