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

MIB = 1024 * 1024
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


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
    # a request body above this is refused with 413 before it is read (Content-Length) or as
    # soon as it passes the limit (chunked): never buffered beyond it
    max_body_bytes: int = Field(default=MIB, gt=0, le=64 * MIB, strict=True)
    # where a request's Callback may point (esc.manager.callbacks): empty, any address except
    # the refused classes (loopback, link-local, cloud metadata, unspecified, multicast...);
    # else only these networks. A listed network inside a refused class (127.0.0.0/8) lets that
    # class in explicitly; 0.0.0.0/0 does not. The metadata addresses are refused always.
    callback_networks: tuple[IPNetwork, ...] = ()

    @field_validator("callback_networks", mode="before")
    @classmethod
    def _networks(cls, v: object) -> object:
        if not isinstance(v, list | tuple):
            return v
        out: list[IPNetwork] = []
        for i, item in enumerate(v):
            if not isinstance(item, str | ipaddress.IPv4Network | ipaddress.IPv6Network):
                raise ValueError(f"[{i}]: a CIDR string like 192.0.2.0/24, not {item!r}")
            try:
                out.append(ipaddress.ip_network(item, strict=True))
            except ValueError as exc:
                raise ValueError(f"[{i}] {item!r}: not a network ({exc})") from None
        return tuple(out)

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
