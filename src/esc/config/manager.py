"""``[manager]``: escmanager's northbound listeners and the VIM it deploys through."""

from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import Field, field_validator, model_validator

from esc.config.types import ListenIp, Model, RuleError, no_control

# The VIMs escmanager can deploy through. "lab" is built by the lab package (esclab, the
# checkout only, with its own settings): an install without it refuses it at start, naming
# manager.vim (esc.manager.vim.build_vim).
VimKind = Literal["fake", "lab"]


class ManagerConfig(Model):
    """escmanager's northbound listeners. Plain HTTP is off unless ``http_port`` is set; the
    certificate is generated at first start when missing (default ``<etc>/manager.crt|.key``)."""

    bind: ListenIp = ipaddress.IPv6Address("::")  # "::" is dual-stack (IPv4-mapped accepted)
    https_port: int = Field(default=8443, ge=1, le=65535)
    http_port: int | None = Field(default=None, ge=1, le=65535)
    # the operator portal (HTTPS, same certificate and users as the API); None: off
    portal_port: int | None = Field(default=9001, ge=1, le=65535)
    cert_file: str | None = None
    key_file: str | None = None
    vim: VimKind = "fake"

    @field_validator("cert_file", "key_file")
    @classmethod
    def _path(cls, v: str | None) -> str | None:
        return None if v is None else no_control(v)

    @model_validator(mode="after")
    def _distinct_ports(self) -> ManagerConfig:
        seen: dict[int, str] = {}
        for name in ("https_port", "http_port", "portal_port"):
            port = getattr(self, name)
            if port is None:
                continue
            if port in seen:
                raise RuleError(name, f"{port} is already the {seen[port]}")
            seen[port] = name
        return self
