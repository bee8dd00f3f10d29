"""Helpers for lab tests: polling with generous deadlines (never fixed sleeps), cleanup checks."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from esclab.lab import Lab, existing_namespaces
from esclab.run import Result
from esclab.topology import HOSTS, SWITCH_NS

T = TypeVar("T")
LAB_NAMESPACES = {*HOSTS, SWITCH_NS}


def eventually(
    fn: Callable[[], T],
    timeout: float = 30.0,
    step: float = 0.1,
    what: str = "",
    explain: Callable[[], object] | None = None,
) -> T:
    """Call ``fn`` until it returns a truthy value; fail with its last value after ``timeout``
    (and with what ``explain`` says then, e.g. the nodes' states and reasons)."""
    deadline = time.monotonic() + timeout
    last: T = fn()
    while not last:
        if time.monotonic() > deadline:
            why = f"; {explain()}" if explain is not None else ""
            raise AssertionError(
                f"timed out after {timeout}s waiting for {what or fn}: {last!r}{why}"
            )
        time.sleep(step)
        last = fn()
    return last


def in_host(host: str, *argv: str, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", host, *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def pings(host: str, addr: str) -> bool:
    return in_host(host, "ping", "-c1", "-W1", addr).returncode == 0


def leftovers(lab: Lab) -> list[str]:
    """Everything a lab could leave behind on this machine."""
    found = [f"namespace {ns}" for ns in sorted(existing_namespaces() & LAB_NAMESPACES)]
    prefix = str(lab.root) + "/"
    found += [
        f"mount {line.split()[1]}"
        for line in Path("/proc/self/mounts").read_text().splitlines()
        if line.split()[1].startswith(prefix)
    ]
    if lab.root.exists():
        found.append(f"directory {lab.root}")
    return found


NODES = ("esc-ha-0", "esc-ha-1")


def node_state(lab: Lab, host: str) -> str | None:
    return lab.node_state(host)


def states(lab: Lab) -> dict[str, str | None]:
    return {h: lab.node_state(h) for h in NODES}


def master_and_backup(lab: Lab) -> tuple[str, str] | None:
    st = states(lab)
    masters = [h for h, s in st.items() if s == "MASTER"]
    backups = [h for h, s in st.items() if s == "BACKUP"]
    if len(masters) == 1 and len(backups) == 1:
        return masters[0], backups[0]
    return None


def wait_pair(lab: Lab, timeout: float = 120.0) -> tuple[str, str]:
    """Wait for exactly one MASTER and one BACKUP; return (master, backup)."""
    return eventually(lambda: master_and_backup(lab), timeout, 0.1, "one MASTER and one BACKUP")


def holds_address(host: str, addr: str) -> bool:
    out = in_host(host, "ip", "-o", "addr", "show").stdout
    return any(f" {addr}/" in line for line in out.splitlines())


def vip_holders(lab: Lab, vip: str) -> list[str]:
    return [h for h in NODES if holds_address(h, vip)]


def mac_of(host: str, iface: str = "eth0") -> str:
    out = in_host(host, "cat", f"/sys/class/net/{iface}/address").stdout
    return out.strip()


def nb_sees_vip_at(vip: str) -> str | None:
    """The MAC the northbound client resolves the VIP to (after a ping refreshes it)."""
    in_host("nb", "ping", "-c1", "-W1", vip)
    out = in_host("nb", "ip", "neigh", "show", vip).stdout.split()
    return out[out.index("lladdr") + 1] if "lladdr" in out else None


def escadm(
    host: str, lab: Lab, *args: str, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """Run escadm inside a node, as an operator would there."""
    env = dict(os.environ, ESC_ROOT=str(lab.node_paths(host).root))
    exe = str(Path(sys.executable).parent / "escadm")
    return subprocess.run(
        ["ip", "netns", "exec", host, exe, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


def psql(lab: Lab, host: str, sql: str, timeout: float = 30.0) -> Result:
    """Run SQL on a node's local database over its unix socket, as postgres."""
    return lab.psql(host, sql, timeout)


ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def save_artifacts(lab: Lab, name: str) -> None:
    """Keep every node's logs (and the lab state) for a look after the run; never fails."""
    dest = ARTIFACTS / name
    for host in NODES:
        try:
            src = lab.node_paths(host).log_dir
            if src.exists():
                shutil.copytree(src, dest / host, dirs_exist_ok=True)
            kept = lab.node_paths(host).data_dir / "diverged"  # the dumps (text files only)
            for dump in kept.glob("diverged-*.txt") if kept.is_dir() else ():
                (dest / host / "diverged").mkdir(parents=True, exist_ok=True)
                shutil.copy(dump, dest / host / "diverged" / dump.name)
        except OSError:
            continue
    if lab.state_file.exists():
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy(lab.state_file, dest / "lab.json")


def api_code_from_nb(lab: Lab, url: str) -> int:
    """The HTTP status nb gets for GET ``url`` with the lab's API credentials (0: no answer)."""
    api = lab.status()["api"]
    res = in_host(
        "nb", "curl", "-sk", "-m", "5", "-o", "/dev/null", "-w", "%{http_code}",
        "-u", f"{api['user']}:{api['password']}", url,
    )  # fmt: skip
    return int(res.stdout or 0)


def deployment_body(
    tenant: str, name: str, count: int = 3, networks: tuple[str, ...] = ("vnf-net",)
) -> dict[str, object]:
    """A northbound deployment of ``count`` VMs in one vm_group ``g1``."""
    return {
        "tenant": tenant,
        "name": name,
        "vm_groups": [
            {
                "name": "g1",
                "image": "cirros",
                "flavor": "m1.small",
                "count": count,
                "networks": list(networks),
                "kpi": {"type": "ICMPPing", "poll_interval_s": 3},
                "rules": [{"event": "VM_ALIVE", "action": "recover autohealing"}],
            }
        ],
    }


def lab_fixture(request: pytest.FixtureRequest, **up: Any) -> Iterator[Lab]:
    """Body of a module fixture: a fresh lab brought up with ``up``, always torn down."""
    lab = Lab()
    lab.down()
    try:
        lab.up(**up)
        yield lab
    finally:
        save_artifacts(lab, request.module.__name__)
        lab.down()
