"""Operations on a booted pair, shared by its tests and ``bench/upgrade.py``: wait for a node
to be the standby again, reboot one, upgrade one (``dpkg -i`` restarts its agent), and the
rolling upgrade of the pair (the standby, a switchover, the other)."""

from __future__ import annotations

import time
from pathlib import Path

from esc.errors import LabError
from esclab import faults, scenarios
from esclab.guide import install
from esclab.lab import Lab, wait_until
from esclab.topology import NODES

BOOT_S = 240.0  # a boot: init, agent start, PostgreSQL recovery, rejoin; a slow machine included


def other(host: str) -> str:
    return NODES[1 - NODES.index(host)]


def agent_pid(lab: Lab, host: str) -> int:
    """The agent's pid as systemd knows it inside ``host`` (0: not running, or no host)."""
    node = lab.booted_node(host)
    if not node.is_running():
        return 0
    try:
        res = node.exec(
            ["systemctl", "show", "-p", "MainPID", "--value", "esc-haagent"], check=False
        )
    except LabError:  # powered off in between
        return 0
    return int(res.stdout.strip() or 0) if res.stdout.strip().isdigit() else 0


def _must(ok: bool, what: str) -> None:
    if not ok:
        raise LabError(f"timed out after {BOOT_S:.0f}s waiting for {what}")


def whole(lab: Lab, standby: str) -> bool:
    """The pair is whole with ``standby`` as the standby (``scenarios.pair_verdict``: in sync
    and outdated on neither side; an outdated standby must not be promoted, so a pair is not
    whole until then)."""
    health = scenarios.pair_health(lab)
    return health.ok and health.backup == standby


def wait_standby(lab: Lab, host: str) -> None:
    """``host``'s agent runs under systemd, and the pair is whole with it as the standby."""
    _must(wait_until(lambda: agent_pid(lab, host) != 0, BOOT_S, 0.2), f"{host}'s agent")
    _must(wait_until(lambda: whole(lab, host), BOOT_S, 0.2), f"{host} BACKUP and in sync")


def reboot(lab: Lab, host: str) -> None:
    """A real reboot of ``host`` (a new init, a new agent); returns when it is the standby."""
    node = lab.booted_node(host)
    old = node.leader()
    faults.reboot(lab, host)
    _must(wait_until(lambda: node.leader() not in (None, old), BOOT_S, 0.1), f"{host} rebooted")
    wait_standby(lab, host)


def upgrade(lab: Lab, host: str, deb: Path) -> None:
    """``dpkg -i`` of ``deb`` on ``host``: its agent restarts (a new pid) and is the standby."""
    old = agent_pid(lab, host)
    install(lab.booted_node(host), deb)
    _must(
        wait_until(lambda: agent_pid(lab, host) not in (0, old), BOOT_S, 0.1),
        f"{host}'s agent restarted",
    )
    wait_standby(lab, host)


def switchover(lab: Lab, master: str) -> None:
    res = lab.booted_node(master).exec(
        ["escadm", "ha", "switchover", "--wait", "60"], check=False, timeout=90
    )
    if res.returncode != 0:
        raise LabError(f"switchover on {master} failed: {res.stdout} {res.stderr}")
    wait_standby(lab, master)


def rolling_upgrade(lab: Lab, deb: Path) -> dict[str, float]:
    """The standby, a switchover, the other node. Returns when each phase started and the end
    (``time.time()``, the writer's clock), for the write gap of each phase."""
    master = lab.master()
    if master is None:
        raise LabError("rolling upgrade: no MASTER")
    marks = {"standby": time.time()}
    upgrade(lab, other(master), deb)
    marks["switchover"] = time.time()
    switchover(lab, master)
    marks["old primary"] = time.time()
    upgrade(lab, master, deb)
    marks["end"] = time.time()
    return marks


def installed_version(lab: Lab, host: str) -> str:
    return (
        lab.booted_node(host).exec(["dpkg-query", "-W", "-f=${Version}", "esc-ha"]).stdout.strip()
    )
