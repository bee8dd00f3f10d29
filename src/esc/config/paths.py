"""Where one node keeps things (:class:`NodePaths`)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class NodePaths:
    """Where one node keeps things. ``root`` is ``/`` on a real VM; the lab gives each node its own.

    Set ``ESC_ROOT`` to point every tool at a node root.
    """

    root: Path

    @classmethod
    def from_env(cls) -> NodePaths:
        return cls(Path(os.environ.get("ESC_ROOT", "/")))

    @property
    def etc_dir(self) -> Path:
        return self.root / "etc" / "esc"

    @property
    def data_dir(self) -> Path:
        return self.root / "var" / "lib" / "esc"

    @property
    def log_dir(self) -> Path:
        return self.root / "var" / "log" / "esc"

    @property
    def run_dir(self) -> Path:
        return self.root / "run" / "esc"

    @property
    def config_file(self) -> Path:
        return self.etc_dir / "esc.toml"

    @property
    def state_file(self) -> Path:
        return self.run_dir / "keepalived_state"

    @property
    def manager_run_dir(self) -> Path:
        """esc-manager's own directory (its user's, 0700): its control socket, the copy of the
        config it reads (no secret in it), its certificate's copy, the agent's read-only
        status socket for the portal."""
        return self.run_dir / "manager"

    @property
    def manager_socket(self) -> Path:
        return self.manager_run_dir / "manager.sock"

    @property
    def agent_status_socket(self) -> Path:
        """The agent's local API for esc-manager's portal: GET /status and /history only."""
        return self.manager_run_dir / "agent.sock"

    @property
    def pg_socket_dir(self) -> Path:
        """PostgreSQL's unix socket directory (per node: /run is shared between lab nodes)."""
        return self.run_dir / "postgresql"

    @property
    def pki_dir(self) -> Path:
        """Quorum mode: the pair CA's certificate (``ca.crt``) and this host's certificate and
        key (``host.crt``, ``host.key``), from ``escadm ha pki``."""
        return self.etc_dir / "pki"

    @property
    def etcd_dir(self) -> Path:
        """Quorum mode: this host's etcd member's data."""
        return self.data_dir / "etcd"

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pgdata"

    def all_dirs(self) -> tuple[Path, ...]:
        return (self.etc_dir, self.data_dir, self.log_dir, self.run_dir)
