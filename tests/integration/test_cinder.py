"""``ha_mode = cinder`` in the lab: one shared volume (a loop device both nodes see), attached
and mounted by the primary only; failover and switchover move it; the holder's lease keeps the
other node from attaching it. Outcomes only; timings belong to bench/."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest
from labutil import NODES, escadm, eventually, lab_fixture, psql, wait_pair

from esc.config.schema import load_config
from esclab import faults, scenarios
from esclab.lab import Lab

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def lab(request: pytest.FixtureRequest) -> Iterator[Lab]:
    yield from lab_fixture(request, kind="single", ha_mode="cinder")


def node_exec(lab: Lab, host: str, *argv: str) -> subprocess.CompletedProcess[str]:
    full, env = lab.exec_argv(host, list(argv))
    return subprocess.run(full, env=env, capture_output=True, text=True, timeout=60, check=False)


def mounted_on(lab: Lab) -> list[str]:
    """Nodes whose own mount table shows the volume at esc_database (the seed's check)."""
    return [h for h in NODES if "esc_database" in node_exec(lab, h, "mount").stdout]


def rows(lab: Lab, host: str) -> list[int]:
    out = psql(lab, host, "SELECT x FROM cinder_t ORDER BY x").stdout.split()
    return [int(x) for x in out]


def device(lab: Lab) -> str:
    cfg = load_config(lab.node_paths(NODES[0]).config_file)
    assert cfg.ha is not None and cfg.ha.ha_mode == "cinder" and cfg.ha.db_volume_path
    return cfg.ha.db_volume_path


def test_primary_alone_mounts_the_shared_volume(lab: Lab) -> None:
    master, backup = wait_pair(lab)
    assert eventually(lambda: mounted_on(lab) == [master], 30, what="volume on the primary only")
    psql(lab, master, "CREATE TABLE cinder_t (x int PRIMARY KEY); INSERT INTO cinder_t VALUES (1)")
    assert rows(lab, master) == [1]
    # No PostgreSQL at all on the standby: the data lives on the volume it has not attached.
    assert not (lab.node_paths(backup).pg_socket_dir / ".s.PGSQL.5432").exists()


def test_standby_cannot_attach_while_the_primary_holds_it(lab: Lab) -> None:
    master, backup = wait_pair(lab)
    code = (
        "import sys; from pathlib import Path; from esc.drivers.volume import VolumeLease\n"
        "from esc.errors import DbError\n"
        "try:\n    VolumeLease(Path(sys.argv[1])).acquire()\n"
        "except DbError as e:\n    print(e); sys.exit(3)\n"
    )
    res = node_exec(lab, backup, sys.executable, "-c", code, device(lab))
    assert res.returncode == 3, res.stdout + res.stderr
    assert "attached to the other node" in res.stdout
    assert mounted_on(lab) == [master]


def test_failover_moves_the_volume_and_keeps_the_data(lab: Lab) -> None:
    master, backup = wait_pair(lab)
    psql(lab, master, "INSERT INTO cinder_t VALUES (2)")
    scenarios.SCENARIOS["kill-node"](lab, master)
    eventually(lambda: lab.master() == backup, 60, what=f"{backup} MASTER")
    assert rows(lab, backup) == [1, 2]
    assert eventually(lambda: mounted_on(lab) == [backup], 30, what="volume on the new primary")
    psql(lab, backup, "INSERT INTO cinder_t VALUES (3)")
    # The old primary boots as the standby: it waits, without the volume.
    scenarios.restore(lab, master)
    assert wait_pair(lab) == (backup, master)
    assert mounted_on(lab) == [backup]


def test_switchover_hands_the_volume_over(lab: Lab) -> None:
    master, backup = wait_pair(lab)
    res = escadm(master, lab, "ha", "switchover")
    assert res.returncode == 0, res.stdout + res.stderr
    eventually(lambda: lab.master() == backup, 60, what=f"{backup} MASTER after switchover")
    assert wait_pair(lab) == (backup, master)
    assert rows(lab, backup) == [1, 2, 3]
    assert eventually(lambda: mounted_on(lab) == [backup], 30, what="volume moved")


def test_postgres_crash_recovers_from_the_volume(lab: Lab) -> None:
    master, _ = wait_pair(lab)
    faults.signal_component(lab, master, "postgres", signal.SIGKILL)
    # Crash recovery on the volume, on whichever node holds it next.
    eventually(lambda: (m := lab.master()) and rows(lab, m) == [1, 2, 3], 60, what="recovered")
    new_master, _ = wait_pair(lab)
    assert rows(lab, new_master) == [1, 2, 3]
    assert eventually(lambda: mounted_on(lab) == [new_master], 30, what="one mount")
