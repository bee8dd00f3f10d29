"""The lab VIM's settings: the lab's own file next to the product's config, never in it.

The product's schema knows only the VIM's kind (``manager.vim = "lab"``). What the lab VIM
needs beyond that lives in ``<etc>/lab-vim.toml`` (keys as in :class:`LabVimSettings`), which
the lab writes with each node's ``esc.toml`` and the lab VIM reads when the manager builds it;
a missing file means the defaults. Errors name the key and the file, as the product's do.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated

import tomli_w
from pydantic import (
    BeforeValidator,
    Field,
    Strict,
    ValidationError,
    field_validator,
    model_validator,
)

from esc.addresses import is_allowed
from esc.config.load import config_error, read_toml
from esc.config.paths import NodePaths
from esc.config.types import STR, IfName, Model, RuleError, absolute_path, no_control
from esc.errors import ConfigError
from esc.files import write_atomic

SETTINGS_FILE = "lab-vim.toml"

# Linux network namespace names: a file under /run/netns.
_NETNS = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,62}")


def _subnet(value: object) -> object:
    if isinstance(value, str):
        try:
            return ipaddress.ip_network(no_control(value))
        except ValueError as exc:
            raise ValueError(f"{value!r} is not a network (ADDRESS/LEN, host bits zero)") from exc
    if not isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network):
        raise ValueError(f"{value!r} is not a network (text: ADDRESS/LEN)")  # not 5 as 0.0.0.5/32
    return value


# not strict: JSON (the settings handed to a process, model_dump_json) gives the network as
# text, which _subnet parses first; strict mode would then refuse the parsed network
Subnet = Annotated[
    Annotated[ipaddress.IPv4Network, Strict(False)]
    | Annotated[ipaddress.IPv6Network, Strict(False)],
    BeforeValidator(_subnet),
    STR,
]


class LabVimSettings(Model):
    """The lab VIM (``manager.vim = "lab"``): each VM is a network namespace with one veth on
    the VNF bridge ``bridge`` in the namespace ``switch_netns``, its address from ``subnet``
    (host numbers from ``first_host`` up: lower ones are left to the controller nodes), and a
    responder on ``tcp_port``. ``state_dir`` is the registry both managers share.

    The default subnet, 2001:db8:200::/64, is used by no lab network of either topology
    (single: 192.0.2.0/24 + 2001:db8::/64; multi: 198.51.100.0/24 + 2001:db8:100::/64,
    192.0.2.0/24, 203.0.113.0/24)."""

    state_dir: str = "/var/tmp/esc-lab/vim"
    switch_netns: str = "esc-sw"
    bridge: IfName = "br-vnf"
    subnet: Subnet = ipaddress.IPv6Network("2001:db8:200::/64")
    first_host: int = Field(default=0x100, ge=1)
    tcp_port: int = Field(default=7000, ge=1, le=65535)
    # Simulated boot time: a create takes at least this long, so failover can hit it mid-way.
    create_delay_s: float = Field(default=0.5, ge=0, le=600)
    # The interpreter that runs the responder inside each VM; None: the manager's own.
    python: str | None = None

    @field_validator("state_dir", "python")
    @classmethod
    def _abs_path(cls, v: str | None) -> str | None:
        return None if v is None else absolute_path(v)

    @field_validator("switch_netns")
    @classmethod
    def _netns(cls, v: str) -> str:
        if not _NETNS.fullmatch(v):
            raise ValueError(f"{v!r}: letters, digits, '_', '.', '-' (max 63)")
        return v

    @field_validator("subnet")
    @classmethod
    def _doc_subnet(
        cls, v: ipaddress.IPv4Network | ipaddress.IPv6Network
    ) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        # the lab's traffic rule (esc/addresses.py): its VMs are lab traffic
        if not (is_allowed(v.network_address) and is_allowed(v.broadcast_address)):
            raise ValueError(
                f"{v} is outside the documentation ranges the lab keeps to "
                "(192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32)"
            )
        return v

    @model_validator(mode="after")
    def _room(self) -> LabVimSettings:
        # the last IPv4 address is the broadcast address
        if self.first_host >= self.subnet.num_addresses - 1:
            raise RuleError("first_host", f"{self.first_host} leaves no address in {self.subnet}")
        return self


def settings_path(paths: NodePaths) -> Path:
    return paths.etc_dir / SETTINGS_FILE


def parse_settings(data: dict[str, object], where: str) -> LabVimSettings:
    """Validate the file's table; an error names the key, ``where`` (the file) in its message."""
    try:
        return LabVimSettings.model_validate(data)
    except ValidationError as exc:
        err = config_error(exc)
        raise ConfigError(err.field, f"{err.message} (in {where})") from None


def load_settings(paths: NodePaths) -> LabVimSettings:
    """The node's lab VIM settings; the defaults when the lab wrote none."""
    path = settings_path(paths)
    if not path.exists():
        return LabVimSettings()
    return parse_settings(read_toml(path), str(path))


def save_settings(settings: LabVimSettings, paths: NodePaths) -> None:
    text = tomli_w.dumps(settings.model_dump(mode="json", exclude_none=True))
    write_atomic(settings_path(paths), text, mode=0o644)
