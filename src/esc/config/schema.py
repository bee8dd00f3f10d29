"""The project's one config schema (pydantic, frozen), its file format (TOML) and its paths.

Every component reads the same file, ``<root>/etc/esc/esc.toml``, and every rule on its values
lives in the schema: escadm only maps its flags to fields (``esc.cli.config_flags``). A value
that is wrong is reported as a :class:`ConfigError` naming the dotted field (``ha.kad_vri``):
pydantic's location, joined for a rule over several fields by the field its
:class:`RuleError` names (data, never parsed from the message). A file is only ever replaced
atomically, so a failed write leaves the old config byte-for-byte unchanged.

The schema is split by section; this module gathers it, so ``esc.config.schema`` names all:

    types.py    value types (address kinds, interface names, bounded integers), RuleError
    ha.py       [ha]: Vip, Route, HaConfig
    bgp.py      [bgp]: BgpConfig
    manager.py  [manager]: ManagerConfig
    node.py     EscConfig and its smaller sections (replication, database, agent)
    paths.py    NodePaths
    load.py     parse, load, dump and save the file
"""

from esc.config.bgp import BgpConfig
from esc.config.ha import HaConfig, HaMode, Route, Vip
from esc.config.load import (
    config_error,
    dump_config,
    load_config,
    parse_config,
    read_toml,
    save_config,
)
from esc.config.manager import ManagerConfig, VimKind
from esc.config.node import (
    AgentConfig,
    DatabaseConfig,
    EscConfig,
    QuorumConfig,
    ReplicationConfig,
)
from esc.config.paths import NodePaths
from esc.config.types import (
    AnycastIp,
    BgpPeerIp,
    GatewayIp,
    IfName,
    ListenIp,
    NextHopIp,
    NodeIp,
    RuleError,
    VipIp,
    no_control,
)
from esc.files import write_atomic

__all__ = [
    "AgentConfig",
    "AnycastIp",
    "BgpConfig",
    "BgpPeerIp",
    "DatabaseConfig",
    "EscConfig",
    "GatewayIp",
    "HaConfig",
    "HaMode",
    "IfName",
    "ListenIp",
    "ManagerConfig",
    "NextHopIp",
    "NodeIp",
    "NodePaths",
    "QuorumConfig",
    "ReplicationConfig",
    "Route",
    "RuleError",
    "VimKind",
    "Vip",
    "VipIp",
    "config_error",
    "dump_config",
    "load_config",
    "no_control",
    "parse_config",
    "read_toml",
    "save_config",
    "write_atomic",
]
