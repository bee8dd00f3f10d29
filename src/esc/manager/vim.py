"""The VIM interface deployments are carried out through, and an in-memory fake.

Every method is idempotent by (deployment id, VM name): a new primary resuming a half-done
deployment calls ``create_vm`` again for the VM the old primary was creating, and that must
not create a second one.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Protocol

from esc.config.schema import EscConfig, NodePaths
from esc.errors import ConfigError, DriverError

log = logging.getLogger("esc.manager.vim")


class VimError(DriverError):
    """The VIM refused or failed an operation."""


@dataclass(frozen=True)
class VmSpec:
    """What a VM is made of (one member of a vm_group)."""

    vm_group: str
    image: str
    flavor: str
    networks: tuple[str, ...] = ()


@dataclass(frozen=True)
class VmInfo:
    deployment_id: str
    name: str
    spec: VmSpec


class Vim(Protocol):
    """A virtual infrastructure manager. All methods idempotent; errors raise VimError."""

    async def create_vm(self, deployment_id: str, vm_name: str, spec: VmSpec) -> VmInfo:
        """Create the VM, or return the existing one of that name."""
        ...

    async def delete_vm(self, deployment_id: str, vm_name: str) -> None:
        """Delete the VM; no error if it does not exist."""
        ...

    async def vm_exists(self, deployment_id: str, vm_name: str) -> bool: ...


@dataclass
class FakeVim:
    """In-memory VIM for tests and for running without a lab. Thread-safe, so two service
    instances (old and new primary) in one test process can share it like a real VIM.

    ``delay_s`` makes each create take time, so a failover can land in the middle of a
    deployment. ``creations`` counts VMs actually created per name: a value above 1 is the
    bug the resume logic must prevent. ``fail_names`` makes create fail for those VM names.
    """

    delay_s: float = 0.0
    fail_names: frozenset[str] = frozenset()
    vms: dict[tuple[str, str], VmInfo] = field(default_factory=dict)
    creations: Counter[str] = field(default_factory=Counter)
    create_calls: Counter[str] = field(default_factory=Counter)
    deletions: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    async def create_vm(self, deployment_id: str, vm_name: str, spec: VmSpec) -> VmInfo:
        key = (deployment_id, vm_name)
        with self._lock:
            self.create_calls[vm_name] += 1
            existing = self.vms.get(key)
        if existing is not None:
            return existing
        if vm_name in self.fail_names:
            raise VimError(f"fake VIM: cannot create {vm_name}")
        if self.delay_s > 0:
            # the VM appears only at the end: a caller cancelled mid-way created nothing
            await asyncio.sleep(self.delay_s)
        with self._lock:
            existing = self.vms.get(key)
            if existing is not None:
                return existing
            info = VmInfo(deployment_id, vm_name, spec)
            self.vms[key] = info
            self.creations[vm_name] += 1
            return info

    async def delete_vm(self, deployment_id: str, vm_name: str) -> None:
        with self._lock:
            if self.vms.pop((deployment_id, vm_name), None) is not None:
                self.deletions[vm_name] += 1

    async def vm_exists(self, deployment_id: str, vm_name: str) -> bool:
        with self._lock:
            return (deployment_id, vm_name) in self.vms

    def names(self) -> set[str]:
        with self._lock:
            return {name for _, name in self.vms}


def build_vim(cfg: EscConfig, paths: NodePaths) -> Vim:
    """The VIM ``cfg.manager.vim`` names. The lab VIM lives in the lab package (``esclab``,
    the checkout only), never in the product's, and so do its settings (read from the node's
    ``paths``): without the package, ``vim = "lab"`` is refused, naming ``manager.vim``."""
    if cfg.manager.vim == "lab":
        try:
            from esclab.vim import build_lab_vim  # noqa: PLC0415 - optional, lab only
        except ImportError as exc:
            raise ConfigError(
                "manager.vim", '"lab" needs the lab package (the checkout), not installed here'
            ) from exc
        return build_lab_vim(paths)
    log.warning("VIM: in-memory fake (VMs are not real and vanish with the process)")
    return FakeVim()
