"""``ha_mode = drbd_on_cinder`` in the lab: replication as in ``drbd``, each node's data
directory on its own external volume mounted at ``<root>/esc_database``."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest
from labutil import NODES, eventually, lab_fixture, psql, wait_pair

from esc.config.schema import load_config
from esclab import scenarios
from esclab.lab import Lab

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def lab(request: pytest.FixtureRequest) -> Iterator[Lab]:
    yield from lab_fixture(request, kind="single", ha_mode="drbd_on_cinder")


def own_mount(lab: Lab, host: str) -> str | None:
    """The device mounted at the node's esc_database, in the node's own mount table."""
    mnt = str(lab.node_paths(host).root / "esc_database")
    full, env = lab.exec_argv(host, ["findmnt", "-n", "-o", "SOURCE", "--mountpoint", mnt])
    res = subprocess.run(full, env=env, capture_output=True, text=True, timeout=30, check=False)
    return res.stdout.strip() or None


def test_each_node_runs_on_its_own_volume_and_replicates(lab: Lab) -> None:
    master, backup = wait_pair(lab)
    devices = {}
    for host in NODES:
        cfg = load_config(lab.node_paths(host).config_file)
        assert cfg.ha is not None and cfg.ha.db_volume_path
        devices[host] = cfg.ha.db_volume_path
        assert (
            eventually(lambda h=host: own_mount(lab, h), 30, what=f"{host} mount")
            == (devices[host])
        )
        pg_version = lab.node_paths(host).root / "esc_database" / "pgdata" / "PG_VERSION"
        full, env = lab.exec_argv(host, ["test", "-f", str(pg_version)])
        assert subprocess.run(full, env=env, timeout=30, check=False).returncode == 0
        # Outside the node's mount table the mount point is an empty directory: the data is
        # on the volume, not on the node's disk.
        assert not pg_version.exists()
    assert devices[NODES[0]] != devices[NODES[1]]
    psql(lab, master, "CREATE TABLE doc_t (x int); INSERT INTO doc_t VALUES (7)")
    eventually(lambda: psql(lab, backup, "SELECT x FROM doc_t").stdout.strip() == "7", 30)


def test_failover_and_rejoin_on_volumes(lab: Lab) -> None:
    master, backup = wait_pair(lab)
    psql(lab, master, "INSERT INTO doc_t VALUES (8)")
    scenarios.SCENARIOS["kill-node"](lab, master)
    eventually(lambda: lab.master() == backup, 60, what=f"{backup} MASTER")
    assert psql(lab, backup, "SELECT count(*) FROM doc_t").stdout.strip() == "2"
    scenarios.restore(lab, master)
    assert wait_pair(lab) == (backup, master)
    eventually(lambda: psql(lab, master, "SELECT count(*) FROM doc_t").stdout.strip() == "2", 60)
    assert own_mount(lab, master) is not None
