"""The product on booted Debian 12 hosts (systemd as PID 1, systemd-nspawn), installed from the
.deb this checkout builds and configured only with the ESC install guide's commands.

One lab for the module, the tests in order: the guide's sequence with its reboot, a power cut
of the primary, and a rolling upgrade, all with a writer through the VIP; every acknowledged
write on the final primary, none executed twice.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from labutil import NODES, eventually, lab_fixture, vip_holders, wait_pair

from esclab import faults, rolling
from esclab.guide import build_deb
from esclab.lab import LAB_VIP, Lab
from esclab.orchestrate import WriterRun, check, other

pytestmark = pytest.mark.integration
VIP = LAB_VIP["single"]


@pytest.fixture(scope="module")
def booted(request: pytest.FixtureRequest) -> Iterator[Lab]:
    yield from lab_fixture(request, kind="single", hosts="booted")


def in_node(lab: Lab, host: str, *argv: str) -> str:
    return lab.booted_node(host).exec(list(argv)).stdout.strip()


def notices(lab: Lab, primary: str) -> int:
    """How often ``primary`` was told that its standby was stopping on purpose."""
    return in_node(lab, primary, "cat", "/var/log/esc/esc_haagent.log").count("stopping on purpose")


def writer(lab: Lab, prefix: str) -> WriterRun:
    w = WriterRun(lab, prefix, url=lab.status()["api"]["url"]).start()
    w.wait_acks(20)
    return w


def assert_no_loss(lab: Lab, w: WriterRun) -> None:
    w.wait_acks(len(w.acks) + 20)
    w.stop()
    result = check(lab, w)
    assert result["lost"] == 0, result
    assert result["duplicated"] == 0, result


def test_guide_sequence_forms_the_pair_and_survives_its_reboot(booted: Lab) -> None:
    master, backup = wait_pair(booted)
    for host in NODES:
        # the guide's checks, on the installed host
        state = in_node(booted, host, "cat", "/opt/cisco/esc/keepalived_state")
        assert state == ("MASTER" if host == master else "BACKUP")
        assert in_node(booted, host, "systemctl", "is-active", "esc_service") == "active"
        status = in_node(booted, host, "systemctl", "show", "-p", "StatusText", "esc_service")
        assert status.startswith(f"StatusText={state}: "), status
        assert in_node(booted, host, "systemctl", "is-enabled", "esc-haagent") == "enabled"
        # Debian's own units stay unused; its 15/main cluster does not start (port 5432)
        for unit in ("keepalived", "exabgp", "postgresql@15-main"):
            res = booted.booted_node(host).exec(["systemctl", "is-active", unit], check=False)
            assert res.stdout.strip() != "active", (host, unit)
    # the guide's last step, reboot: the standby first (no role change), then the primary
    w = writer(booted, "guide")
    rolling.reboot(booted, backup)
    assert booted.node_state(master) == "MASTER"
    rolling.reboot(booted, master)
    assert booted.node_state(backup) == "MASTER"
    eventually(lambda: vip_holders(booted, VIP) == [backup], 60, what="the VIP moved")
    assert_no_loss(booted, w)


def test_power_cut_of_the_primary_fails_over(booted: Lab) -> None:
    master, backup = wait_pair(booted)
    w = writer(booted, "powercut")
    faults.power_cut(booted, master)
    eventually(lambda: booted.node_state(backup) == "MASTER", 60, 0.1, f"{backup} MASTER")
    w.wait_acks(len(w.acks) + 20, timeout=60)  # served by the survivor alone
    faults.power_on(booted, master)
    rolling.wait_standby(booted, master)
    assert_no_loss(booted, w)


def test_rolling_upgrade_loses_and_repeats_nothing(booted: Lab) -> None:
    master, _ = wait_pair(booted)
    old = rolling.installed_version(booted, master)
    newer = build_deb(booted.root / "dist", version=f"{old}.1")
    before = {h: notices(booted, h) for h in NODES}
    w = writer(booted, "upgrade")
    rolling.rolling_upgrade(booted, newer)
    assert booted.master() == other(master)
    assert {rolling.installed_version(booted, h) for h in NODES} == {f"{old}.1"}
    # each standby told its primary before its database went (no wait for the grace)
    assert all(notices(booted, h) > before[h] for h in NODES), before
    assert_no_loss(booted, w)
