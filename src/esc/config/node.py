"""The whole config of one node (:class:`EscConfig`) and its smaller sections."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from esc.config.bgp import BgpConfig
from esc.config.ha import HaConfig
from esc.config.manager import ManagerConfig
from esc.config.types import Model, absolute_path, no_control

_NODE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,62}")


class ReplicationConfig(Model):
    on_standby_loss: Literal["strict", "available"] = "available"
    standby_loss_grace_s: float = Field(default=5.0, ge=0)
    password: str = Field(default="", repr=False)

    @field_validator("password")
    @classmethod
    def _pw(cls, v: str) -> str:
        return no_control(v)


class DatabaseConfig(Model):
    port: int = Field(default=5432, ge=1, le=65535)
    name: str = "esc"
    pg_bindir: str = "/usr/lib/postgresql/15/bin"
    # WAL a replication slot may hold for an absent standby before it is given up (then that
    # standby is re-cloned); bounds the primary's disk use in a long outage
    max_slot_wal_keep_size_mb: int = Field(default=4096, ge=64)
    # where ha.db_volume_id is looked up (virtio-<id[:20]>), as OpenStack exposes volumes
    volume_dir: str = "/dev/disk/by-id"

    @field_validator("volume_dir", "pg_bindir")
    @classmethod
    def _dir(cls, v: str) -> str:
        return absolute_path(v)


class AgentConfig(Model):
    cycle_s: float = Field(default=0.2, gt=0, le=10)
    peer_port: int = Field(default=7400, ge=1, le=65535)
    peer_secret: str = Field(default="", repr=False)
    # A peer view older than this is not trusted: keep it below VRRP's master-down time.
    peer_timeout_s: float = Field(default=0.4, gt=0)
    health_failures: int = Field(default=3, ge=1)
    heartbeat_timeout_s: float = Field(default=1.5, gt=0)

    @field_validator("peer_secret")
    @classmethod
    def _secret(cls, v: str) -> str:
        return no_control(v)


class EscConfig(Model):
    """The whole config of one node."""

    node_name: str = "esc"
    ha: HaConfig | None = None
    bgp: BgpConfig | None = None
    replication: ReplicationConfig = ReplicationConfig()
    database: DatabaseConfig = DatabaseConfig()
    agent: AgentConfig = AgentConfig()
    manager: ManagerConfig = ManagerConfig()

    @field_validator("node_name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NODE_NAME.fullmatch(v):
            raise ValueError("letters, digits, '_', '.', '-' (max 63)")
        return v
