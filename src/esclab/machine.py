"""The machine-level operations the lab is built from: the network namespaces that exist, the
processes inside one (and killing them all), the interfaces and addresses a namespace has, the
loop devices behind an image file, and polling until a condition holds. Each is a thin wrapper
over ``ip``, ``losetup`` or ``/proc``; none knows what the lab is.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from esc.config.paths import NodePaths
from esc.drivers.proc import pid_is_live
from esc.errors import CommandError
from esc.files import open_append
from esclab.run import in_ns, run


def existing_namespaces() -> set[str]:
    out = run(["ip", "-j", "netns", "list"], check=False).stdout.strip()
    if not out:
        return set()
    return {entry["name"] for entry in json.loads(out)}


def ns_pids(ns: str) -> list[int]:
    res = run(["ip", "netns", "pids", ns], check=False)
    return [int(p) for p in res.stdout.split() if p.isdigit()]


def kill_all_in(ns: str, timeout: float = 10.0) -> int:
    """SIGKILL every process in ``ns`` until none is left (a supervisor may respawn one)."""
    seen: set[int] = set()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = [p for p in ns_pids(ns) if pid_is_live(p)]
        if not alive:
            break
        for pid in alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        seen.update(alive)
        time.sleep(0.02)
    return len(seen)


def wait_until(pred: Callable[[], bool], timeout: float, step: float = 0.05) -> bool:
    """Poll ``pred`` until true or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        if pred():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(step)


def loop_devices(image: Path) -> list[Path]:
    """Loop devices backed by ``image``."""
    if not image.exists():
        return []
    out = run(["losetup", "-n", "-O", "NAME", "-j", str(image)], check=False).stdout
    return [Path(line.strip()) for line in out.splitlines() if line.strip()]


def host_interfaces(ns: str) -> dict[str, list[str]]:
    """Interface -> addresses (with prefix) inside ``ns``, loopback left out."""
    try:
        out = run(["ip", "-n", ns, "-j", "addr", "show"]).stdout
    except CommandError:
        return {}
    result: dict[str, list[str]] = {}
    for link in json.loads(out or "[]"):
        if link.get("ifname") == "lo":
            continue
        result[link["ifname"]] = [
            f"{a['local']}/{a['prefixlen']}"
            for a in link.get("addr_info", [])
            if a.get("scope") != "link"
        ]
    return result


def start_daemon(ns: str, root: Path, program: str) -> int:
    """Start one of this virtualenv's daemons (``esc-haagent``, ``esc-witness``) in namespace
    ``ns`` with ESC_ROOT ``root``, its own session, its output in ``<log>/<program>.stdout``
    (esc_haagent.stdout for esc-haagent); its pid."""
    paths = NodePaths(root)
    paths.log_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, ESC_ROOT=str(root))
    out = paths.log_dir / f"{program.replace('-', '_')}.stdout"
    with os.fdopen(open_append(out), "ab") as log:  # 0640, as the node's other logs
        proc = subprocess.Popen(
            in_ns(ns, str(Path(sys.executable).parent / program)),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
        )
    return proc.pid


def free_ports(n: int) -> list[int]:
    """n distinct free TCP ports on 127.0.0.1 (all held open until every one is chosen)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()
