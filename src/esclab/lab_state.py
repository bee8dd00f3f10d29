"""The lab's record and what follows from it: ``<root>/lab.json`` (read and written
atomically), the topology and kind of hosts it names, each node's files as seen from here,
which of the lab's namespaces exist, and whether the lab is up and running or stale. The record
holds the lab API's admin password: it is root's only (0600).
:class:`LabState` is the base of :class:`esclab.lab.Lab`; the steps that build, run and
inspect the lab build on it (:mod:`esclab.lab_build`, :mod:`esclab.lab_pair`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

from esc.config.schema import NodePaths, write_atomic
from esc.drivers.proc import pid_is_live
from esc.errors import LabError
from esclab.booted import BootedNode
from esclab.machine import existing_namespaces
from esclab.topology import HOSTS, NODES, SWITCH_NS, WITNESS, Topology, build_topology

HostKind = Literal["process", "booted"]  # what a controller node is
DEFAULT_ROOT = Path("/var/tmp/esc-lab")


def lab_root() -> Path:
    return Path(os.environ.get("ESC_LAB_ROOT", str(DEFAULT_ROOT)))


class LabState:
    """The lab at ``root`` as ``lab.json`` records it. ``fail_at`` makes ``up`` fail at a named
    step (tests)."""

    def __init__(self, root: Path | None = None, fail_at: str | None = None) -> None:
        self.root = root or lab_root()
        self.fail_at = fail_at

    # --- state ------------------------------------------------------------------------------

    @property
    def state_file(self) -> Path:
        return self.root / "lab.json"

    def read_state(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return {}
        return data

    def write_state(self, **changes: Any) -> None:
        state = self.read_state()
        state.update(changes)
        # 0600: it holds the lab API's admin password
        write_atomic(self.state_file, json.dumps(state, indent=2, sort_keys=True), 0o600)

    def topology(self) -> Topology:
        kind = self.read_state().get("topology")
        if kind not in ("single", "multi"):
            raise LabError("no lab is up (run `escadm lab up`)")
        return build_topology(kind)

    @property
    def booted(self) -> bool:
        """The controller nodes are booted hosts (systemd-nspawn), not processes."""
        return self.read_state().get("hosts") == "booted"

    @property
    def quorum(self) -> bool:
        """Quorum mode (``--quorum etcd``): the witness runs esc-witness."""
        return self.read_state().get("quorum") == "etcd"

    def booted_node(self, host: str) -> BootedNode:
        """A controller node, or the witness host in quorum mode."""
        if host not in NODES and not (host == WITNESS and self.quorum):
            raise LabError(f"{host} is not a controller node ({', '.join(NODES)})")
        return BootedNode(self.root, host)

    def node_paths(self, host: str) -> NodePaths:
        """The node's files as seen from here: its root directory, or, on a booted host, the
        running system's (with the default paths: /etc/esc, /var/lib/esc, /run/esc)."""
        if host not in NODES:
            raise LabError(f"{host} is not a controller node ({', '.join(NODES)})")
        if self.booted:
            return NodePaths(self.booted_node(host).file_root())
        return NodePaths(self.root / "nodes" / host)

    def _lab_namespaces(self) -> set[str]:
        return (set(HOSTS) | {SWITCH_NS}) & existing_namespaces()

    def exists(self) -> bool:
        return self.state_file.exists() or bool(self._lab_namespaces())

    def is_running(self) -> bool:
        """Up, complete, and its router process alive. Anything else that exists is stale."""
        state = self.read_state()
        if state.get("status") != "up":
            return False
        if self._lab_namespaces() != set(self.topology().namespaces):
            return False
        pid = state.get("pids", {}).get("bird")
        return isinstance(pid, int) and pid_is_live(pid)

    def _step(self, name: str) -> None:
        if self.fail_at == name:
            raise LabError(f"injected failure at step {name!r}")
