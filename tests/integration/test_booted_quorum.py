"""Quorum mode on booted Debian 12 hosts: the two nodes and the witness each a booted system
(systemd-nspawn), the package installed from the .deb this checkout builds, set up with the
guide's commands and docs/operations.md's quorum steps (`escadm ha set --quorum etcd
--witness IP`, `escadm ha pki create` on one node and `install` on each host, the config
copied to the witness, esc-witness enabled there) and nothing else.

A power cut of the primary fails over, a power cut of the witness changes nothing, with a
writer through the VIP: every acknowledged write on the final primary, none executed twice.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from labutil import NODES, eventually, lab_fixture, wait_pair

from esclab import faults, rolling
from esclab.lab import Lab
from esclab.orchestrate import WriterRun, check
from esclab.topology import WITNESS

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def booted_quorum(request: pytest.FixtureRequest) -> Iterator[Lab]:
    yield from lab_fixture(request, kind="single", hosts="booted", quorum="etcd")


def in_host(lab: Lab, host: str, *argv: str, check: bool = True) -> str:
    return lab.booted_node(host).exec(list(argv), check=check).stdout.strip()


def test_quorum_mode_set_up_by_the_guide_fails_over_and_ignores_the_witness(
    booted_quorum: Lab,
) -> None:
    lab = booted_quorum
    master, backup = wait_pair(lab)
    assert in_host(lab, WITNESS, "systemctl", "is-active", "esc-witness") == "active"
    assert in_host(lab, WITNESS, "systemctl", "is-enabled", "esc-haagent", check=False) == (
        "disabled"
    )
    for host in NODES:
        status = in_host(lab, host, "escadm", "ha", "status")
        assert "quorum etcd" in status and "witness=https://" in status, status
        # Debian's own etcd unit stays unused: the agent runs this host's member
        assert in_host(lab, host, "systemctl", "is-active", "etcd", check=False) != "active"
    assert "leader key: this node" in in_host(lab, master, "escadm", "ha", "status")
    w = WriterRun(lab, "bq", url=lab.status()["api"]["url"]).start()
    try:
        w.wait_acks(20)
        # the witness lost: nothing changes
        faults.power_cut(lab, WITNESS)
        w.wait_acks(len(w.acks) + 20, timeout=60)
        assert lab.node_state(master) == "MASTER" and lab.node_state(backup) == "BACKUP"
        faults.power_on(lab, WITNESS)
        lab.booted_node(WITNESS).wait_booted()
        eventually(
            lambda: (
                in_host(lab, WITNESS, "systemctl", "is-active", "esc-witness", check=False)
                == "active"
            ),
            60,
            0.2,
            "esc-witness back after the witness's boot",
        )
        # the primary lost: the standby takes the key and serves
        faults.power_cut(lab, master)
        eventually(lambda: lab.node_state(backup) == "MASTER", 60, 0.1, f"{backup} MASTER")
        w.wait_acks(len(w.acks) + 20, timeout=60)  # served by the survivor alone
        assert "leader key: this node" in in_host(lab, backup, "escadm", "ha", "status")
        faults.power_on(lab, master)
        rolling.wait_standby(lab, master)
        w.wait_acks(len(w.acks) + 20, timeout=60)
    finally:
        w.stop()
    result = check(lab, w)
    assert result["acked"] > 0 and result["lost"] == 0 and result["duplicated"] == 0, result
