"""Render keepalived 2.2.7 config text and the agent-alive check script. No I/O in this module.

keepalived is the election, the agent is the gate (DESIGN §2). The rendered config gives the
agent two ways to keep this node from holding the VIP, both ending in keepalived FAULT, and
one to weigh the election by data:

- ``track_file esc_gate``: the agent writes ``0`` (may hold the VIP) or ``1`` (veto). keepalived
  creates it with ``1`` at start (``init_file 1 overwrite``), so a node never holds the VIP
  before its agent has opened the gate;
- ``track_file esc_rank`` (weight 1): the agent writes its data rank (core/decide.data_rank:
  +2 on a newer timeline than the peer's, -2 on an older one, else 0), which keepalived adds to
  the configured priority, so after a partition heals the node with the newer history wins
  the election; keepalived starts it at 0;
- ``vrrp_script esc_agent_alive``: fails when the agent's heartbeat file is older than
  ``agent.heartbeat_timeout_s``, so a hung agent loses the VIP too.

Transitions reach the agent through ``vrrp_notify_fifo`` (lines like
``INSTANCE "ESC" MASTER 101``); no notify script is spawned.

How the config is rendered (each rule learned from ``keepalived -t``; the schema refuses the
values that cannot be rendered, ``esc.config.ha``):

- ``vrrp_version 3`` is required for sub-second ``advert_int`` (under v2, 0.1 is "rounded"); v3
  counts in units of 10 ms and caps at 40.95 s, the range the schema allows.
- One VRRP instance carries one address family: keepalived refuses a mixed-family address in
  ``virtual_ipaddress``, and with v3 an instance whose only address is in
  ``virtual_ipaddress_excluded`` ("No VIP specified; at least one is required"). So an IPv6
  VIP with IPv4 ``ha_node_list`` (the seed's three-network layout) is rendered as an IPv6
  instance on the same sync link (``kad_vif``): adverts go to ff02::12 from the link's IPv6
  link-local address (``native_ipv6``, no unicast peers, which would have to be IPv6), while
  replication and the peer API stay on the IPv4 addresses. The reverse (an IPv4 VIP with IPv6
  nodes) would need IPv4 on an IPv6-only link: the schema refuses it.
- The VIP is rendered with its own prefix length when one was given (``[2001:db8::fc/48]``),
  otherwise as a host address (/32, /128). A VIP that should answer on its subnet is normally
  given the interface's prefix by the operator (``192.0.2.254/24:eth2``).
- Every rendered value is re-checked for whitespace, control characters, quotes, braces and
  comment characters (defence in depth: the schema already validated them).

``ha.gateway_ip`` and ``ha.routes`` are deliberately not rendered: the agent tracks the gateway
and applies the routes itself.
"""

from __future__ import annotations

import re
from pathlib import Path

from esc.addresses import IPAddress
from esc.config.schema import EscConfig, HaConfig, NodePaths
from esc.errors import ConfigError

INSTANCE = "ESC"
GATE_TRACK = "esc_gate"
RANK_TRACK = "esc_rank"
ALIVE_SCRIPT = "esc_agent_alive"
HIGH_PRIORITY = 101  # the first address of ha_node_list
LOW_PRIORITY = 100

# keepalived splits on whitespace, treats '#' and '!' as comments, '{' '}' as blocks and quotes
# as string delimiters: none of them may appear inside a value.
_UNSAFE = re.compile(r"[\s\x00-\x1f\x7f{}\"'#!\\]")


def fifo_path(paths: NodePaths) -> Path:
    """keepalived writes its transitions here (``vrrp_notify_fifo``)."""
    return paths.run_dir / "keepalived.fifo"


def gate_path(paths: NodePaths) -> Path:
    """The ``track_file``: ``0`` lets this node hold the VIP, ``1`` forces FAULT."""
    return paths.run_dir / "vrrp_gate"


def rank_path(paths: NodePaths) -> Path:
    """The ``track_file`` with weight 1: its number is added to the priority (the data rank)."""
    return paths.run_dir / "vrrp_rank"


def heartbeat_path(paths: NodePaths) -> Path:
    """The agent touches this file every cycle; the check script compares its mtime."""
    return paths.run_dir / "agent_heartbeat"


def _safe(field: str, value: object) -> str:
    text = str(value)
    if not text or _UNSAFE.search(text):
        raise ConfigError(
            field, "empty or contains whitespace, control characters, quotes, braces, '#' or '!'"
        )
    return text


def format_advert_int(seconds: float) -> str:
    """``0.2`` -> ``"0.2"``, ``1.0`` -> ``"1"``: VRRPv3 counts centiseconds (the schema's
    ``ha.advert_int`` is a whole number of them)."""
    centis = round(seconds * 100)
    whole, frac = divmod(centis, 100)
    return f"{whole}.{frac:02d}".rstrip("0").rstrip(".")


def vip_text(ha: HaConfig) -> str:
    """The VIP as keepalived writes it: ``ADDR/LEN`` (host length when none was given)."""
    vip = ha.kad_vip
    plen = vip.prefixlen if vip.prefixlen is not None else vip.address.max_prefixlen
    return f"{vip.address}/{plen}"


def peer_of(ha: HaConfig, self_addr: IPAddress) -> tuple[IPAddress, int]:
    """The other node's address and this node's priority (101 for the first of the list)."""
    first, second = ha.ha_node_list
    if self_addr == first:
        return second, HIGH_PRIORITY
    if self_addr == second:
        return first, LOW_PRIORITY
    raise ConfigError("ha.ha_node_list", f"{self_addr} is not one of the two node addresses")


def max_age_ms(cfg: EscConfig) -> int:
    """The heartbeat age (ms) beyond which the check script declares the agent dead."""
    return max(1, round(cfg.agent.heartbeat_timeout_s * 1000))


def render_keepalived(
    cfg: EscConfig, self_addr: IPAddress, paths: NodePaths, check_script: Path
) -> str:
    """The whole keepalived.conf of the node owning ``self_addr``."""
    ha = cfg.ha
    if ha is None:
        raise ConfigError("ha", "not configured (run `escadm ha set`)")
    peer, priority = peer_of(ha, self_addr)
    # An IPv6 VIP over IPv4 nodes: the instance is IPv6 on the sync link (module docstring).
    link_local_v6 = ha.kad_vip.address.version == 6 and self_addr.version == 4
    router_id = _safe("node_name", cfg.node_name)
    fifo = _safe("paths.run_dir", fifo_path(paths))
    gate = _safe("paths.run_dir", gate_path(paths))
    rank = _safe("paths.run_dir", rank_path(paths))
    heartbeat = _safe("paths.run_dir", heartbeat_path(paths))
    script = _safe("check_script", check_script)
    vif = _safe("ha.kad_vif", ha.kad_vif)
    vip_iface = _safe("ha.kad_vip", ha.vip_iface)
    vip = _safe("ha.kad_vip", vip_text(ha))
    src = _safe("ha.ha_node_list", self_addr)
    other = _safe("ha.ha_node_list", peer)
    advert = format_advert_int(ha.advert_int)
    age = max_age_ms(cfg)
    if link_local_v6:
        peers = "    native_ipv6\n"  # to ff02::12 from the sync link's link-local address
    else:
        peers = f"    unicast_src_ip {src}\n    unicast_peer {{\n        {other}\n    }}\n"

    return f"""\
# keepalived.conf of {router_id}, generated by esc from esc.toml: edit the config, not this file.
global_defs {{
    router_id {router_id}
    script_user root
    enable_script_security
    vrrp_version 3
    vrrp_garp_master_delay 1
    vrrp_garp_master_repeat 5
    vrrp_notify_fifo {fifo}
}}

track_file {GATE_TRACK} {{
    file "{gate}"
    weight 0
    init_file 1 overwrite
}}

track_file {RANK_TRACK} {{
    file "{rank}"
    weight 1
    init_file 0 overwrite
}}

vrrp_script {ALIVE_SCRIPT} {{
    script "{script} {heartbeat} {age}"
    interval 1
    timeout 1
    fall 1
    rise 1
}}

vrrp_instance {INSTANCE} {{
    state BACKUP
    nopreempt
    interface {vif}
    virtual_router_id {ha.vrid}
    priority {priority}
    advert_int {advert}
{peers}    virtual_ipaddress {{
        {vip} dev {vip_iface}
    }}
    track_file {{
        {GATE_TRACK}
        {RANK_TRACK}
    }}
    track_script {{
        {ALIVE_SCRIPT}
    }}
}}
"""


def render_check_script() -> str:
    """The POSIX sh check behind ``vrrp_script esc_agent_alive``.

    ``esc-agent-alive FILE MAX_AGE_MS`` exits 0 iff FILE is a regular file whose mtime lies
    within MAX_AGE_MS of now (either side: a clock step must not keep a stale file alive).
    Uses GNU ``stat -c %.3Y`` and ``date +%s%3N`` (millisecond resolution; coreutils 9.1 on
    Debian 12). keepalived execs it without a shell; both arguments are checked here again.
    """
    return r"""#!/bin/sh
# esc-agent-alive FILE MAX_AGE_MS -- generated by esc; keepalived's vrrp_script esc_agent_alive.
# Exit 0 iff FILE exists and its mtime is within MAX_AGE_MS of now. A non-zero exit puts the
# VRRP instance in FAULT, so a hung esc_haagent releases the VIP.
PATH=/usr/bin:/bin
export PATH
[ "$#" -eq 2 ] || exit 2
file=$1
max_ms=$2
case $max_ms in
    '' | *[!0-9]*) exit 2 ;;
esac
[ -f "$file" ] || exit 1
mtime=$(stat -c %.3Y -- "$file" 2>/dev/null) || exit 1
now=$(date +%s%3N) || exit 1
case $mtime in
    [1-9]*.[0-9][0-9][0-9]) ;;
    *) exit 1 ;;
esac
case $now in
    '' | *[!0-9]*) exit 1 ;;
esac
# "SECONDS.mmm" -> milliseconds, as a decimal string without leading zeros.
mtime_ms=${mtime%.*}${mtime#*.}
age=$((now - mtime_ms))
[ "$age" -le "$max_ms" ] && [ "$age" -ge "-$max_ms" ]
"""
