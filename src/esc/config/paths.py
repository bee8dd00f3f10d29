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
