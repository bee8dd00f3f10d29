"""One typed config schema for the agent, the manager and escadm (``esc.config.schema``)."""

from esc.config.schema import (
    AgentConfig,
    BgpConfig,
    DatabaseConfig,
    EscConfig,
    HaConfig,
    NodePaths,
    ReplicationConfig,
    Route,
    Vip,
    load_config,
    save_config,
)

__all__ = [
    "AgentConfig",
    "BgpConfig",
    "DatabaseConfig",
    "EscConfig",
    "HaConfig",
    "NodePaths",
    "ReplicationConfig",
    "Route",
    "Vip",
    "load_config",
    "save_config",
]
