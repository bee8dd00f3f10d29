"""Helpers for lab tests: polling with generous deadlines (never fixed sleeps), cleanup checks."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from esc.lab.lab import Lab, existing_namespaces
from esc.lab.topology import HOSTS, SWITCH_NS

T = TypeVar("T")
LAB_NAMESPACES = {*HOSTS, SWITCH_NS}


def eventually(fn: Callable[[], T], timeout: float = 30.0, step: float = 0.1, what: str = "") -> T:
    """Call ``fn`` until it returns a truthy value; fail with its last value after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: T = fn()
    while not last:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or fn}: {last!r}")
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
