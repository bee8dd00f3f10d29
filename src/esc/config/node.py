"""The whole config of one node (:class:`EscConfig`) and its smaller sections."""

from __future__ import annotations

import ipaddress
import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from esc.config.bgp import BgpConfig
from esc.config.ha import HaConfig
from esc.config.manager import ManagerConfig
from esc.config.types import ListenIp, Model, RuleError, absolute_path, no_control

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
    # A primary with less free space than this for its database (its data directory's and
    # WAL's filesystems) hands the role to a standby in sync that has this much (rule
    # disk-full-handover): PostgreSQL on a full disk fails every write but stays up. 0: off.
    min_free_mb: int = Field(default=256, ge=0, le=1 << 30)
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
    # The monitoring listener (HTTPS, esc.agent.monitor_http): /primary, /replica, /health,
    # /liveness, /readiness for load balancers and monitors, /metrics for Prometheus. 0: off.
    monitor_port: int = Field(default=8008, ge=0, le=65535)
    monitor_bind: ListenIp = ipaddress.IPv6Address("::")  # "::" is dual-stack

    @field_validator("peer_secret")
    @classmethod
    def _secret(cls, v: str) -> str:
        return no_control(v)


# The quorum keeper renews its lease this many times per lease_ttl_s (esc.drivers.quorum).
RENEWALS_PER_LEASE = 8


class QuorumConfig(Model):
    """``[quorum]``: etcd's timing and ports in quorum mode (``ha.quorum = "etcd"``).

    The leader key's lease bounds a failover: the standby takes the key a whole
    ``lease_ttl_s`` after it first saw the holder's last renewal (etcd's own expiry of the
    lease, as long, is the backstop). The holder stops serving ``margin_s``
    before its lease can end as it measures it (clock rates, a cycle to notice, the time to
    deactivate). etcd's own raft timing: ``heartbeat_ms``, ``election_ms``."""

    lease_ttl_s: int = Field(default=2, ge=2, le=60)
    margin_s: float = Field(default=0.5, gt=0)
    heartbeat_ms: int = Field(default=50, ge=10, le=5000)
    election_ms: int = Field(default=500, ge=50, le=50000)
    client_port: int = Field(default=2379, ge=1, le=65535)
    peer_port: int = Field(default=2380, ge=1, le=65535)

    @model_validator(mode="after")
    def _timing(self) -> QuorumConfig:
        if self.election_ms < 5 * self.heartbeat_ms:
            raise RuleError("election_ms", "etcd needs at least 5 times heartbeat_ms")
        # etcd raises a shorter lease to 1.5 election timeouts: say so instead of silently
        # failing over slower than configured.
        if self.lease_ttl_s * 1000 < 1.5 * self.election_ms:
            raise RuleError(
                "lease_ttl_s", f"etcd grants at least 1.5 x election_ms ({self.election_ms} ms)"
            )
        if self.margin_s >= self.lease_ttl_s / 2:
            raise RuleError("margin_s", "must be below half of lease_ttl_s")
        # etcd answers no write while it elects a new leader: up to about two election
        # timeouts (bench/etcd_election.py). The holder must renew across that gap, with one
        # renewal interval to spare, before its lease stops counting.
        spare = self.lease_ttl_s - self.margin_s - self.lease_ttl_s / RENEWALS_PER_LEASE
        if spare * 1000 < 2 * self.election_ms:
            raise RuleError(
                "lease_ttl_s",
                f"too short to outlast an etcd election: lease_ttl_s - margin_s - "
                f"lease_ttl_s/{RENEWALS_PER_LEASE} is {spare:g} s, must be at least "
                f"2 x election_ms ({2 * self.election_ms} ms)",
            )
        if self.client_port == self.peer_port:
            raise RuleError("peer_port", "must differ from client_port")
        return self


class EscConfig(Model):
    """The whole config of one node."""

    node_name: str = "esc"
    ha: HaConfig | None = None
    bgp: BgpConfig | None = None
    replication: ReplicationConfig = ReplicationConfig()
    database: DatabaseConfig = DatabaseConfig()
    agent: AgentConfig = AgentConfig()
    manager: ManagerConfig = ManagerConfig()
    # Only with ha.quorum = "etcd" (the defaults apply when it is absent): see ``quorum_cfg``.
    quorum: QuorumConfig | None = None

    @model_validator(mode="after")
    def _quorum(self) -> EscConfig:
        etcd = self.ha is not None and self.ha.quorum == "etcd"
        if self.quorum is not None and not etcd:
            raise RuleError("quorum", 'only with ha.quorum = "etcd"')
        q = self.quorum_cfg
        if etcd and q.margin_s < 2 * self.agent.cycle_s:
            raise RuleError(
                "quorum.margin_s",
                f"must be at least two agent cycles ({2 * self.agent.cycle_s:g} s): the agent "
                "must notice and deactivate before the lease can end",
            )
        if etcd and self.database.port in (q.client_port, q.peer_port):
            raise RuleError("quorum.client_port", "etcd's ports must differ from database.port")
        self._monitor_port_free(etcd)
        return self

    def _monitor_port_free(self, etcd: bool) -> None:
        port = self.agent.monitor_port
        if port == 0:
            return
        taken = {
            self.agent.peer_port: "agent.peer_port",
            self.database.port: "database.port",
            self.manager.https_port: "manager.https_port",
        }
        if self.manager.http_port is not None:
            taken[self.manager.http_port] = "manager.http_port"
        if self.manager.portal_port is not None:
            taken[self.manager.portal_port] = "manager.portal_port"
        if etcd:
            taken[self.quorum_cfg.client_port] = "quorum.client_port"
            taken[self.quorum_cfg.peer_port] = "quorum.peer_port"
        if port in taken:
            raise RuleError("agent.monitor_port", f"{port} is already {taken[port]}")

    @property
    def quorum_cfg(self) -> QuorumConfig:
        return self.quorum if self.quorum is not None else QuorumConfig()

    @field_validator("node_name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NODE_NAME.fullmatch(v):
            raise ValueError("letters, digits, '_', '.', '-' (max 63)")
        return v
