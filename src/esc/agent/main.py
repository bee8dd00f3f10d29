"""esc-haagent: the HA agent daemon of one node.

    esc-haagent            # reads $ESC_ROOT/etc/esc/esc.toml (ESC_ROOT defaults to /)

Logs to <log>/esc_haagent.log; writes <run>/keepalived_state; local API on <run>/agent.sock;
peer API on the node's own address (ha_node_list), port agent.peer_port. A setup error (exit 2)
is also written to the log and to <run>/agent_error, which `escadm status` shows. Under systemd
(esc-haagent.service, Type=notify) it reports READY, its state and reason, and the watchdog.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from types import FrameType

from esc import pki
from esc.addresses import IPAddress, url_host
from esc.agent import setup_error
from esc.agent.api import PeerPoller, serve_peer, serve_unix
from esc.agent.execute import Threaded
from esc.agent.gateway import GatewayProbe
from esc.agent.history import History
from esc.agent.local_api import read_only
from esc.agent.loop import Agent
from esc.agent.monitor_http import certificate, endpoints, serve_monitor
from esc.agent.peer_tls import PeerTls
from esc.agent.quorum_setup import build_keeper, build_member
from esc.agent.service import ManagedService
from esc.agent.systemd import Notifier
from esc.config.schema import EscConfig, NodePaths, load_config
from esc.core.facts import DecideConfig
from esc.drivers.base import Database
from esc.drivers.exabgp import ExabgpDriver
from esc.drivers.keepalived import KeepalivedDriver
from esc.drivers.postgres import PostgresDriver
from esc.drivers.proc import run
from esc.drivers.shared_db import SharedVolumeDatabase
from esc.drivers.vip import VipDriver
from esc.drivers.volume import Volume, VolumeLease, mountpoint_of, resolve_device
from esc.errors import ConfigError, EscError
from esc.files import LogFile
from esc.host import HostFacts, SystemHostFacts


def own_address(cfg: EscConfig, host: HostFacts) -> tuple[int, IPAddress, IPAddress]:
    """(index, own address, peer address) from ha_node_list and this host's addresses."""
    assert cfg.ha is not None
    mine = {a.ip for addrs in host.addresses().values() for a in addrs}
    nodes = cfg.ha.ha_node_list
    for i, addr in enumerate(nodes):
        if addr in mine:
            return i, addr, nodes[1 - i]
    raise ConfigError("ha.ha_node_list", f"this host owns neither {nodes[0]} nor {nodes[1]}")


def peer_api_url(cfg: EscConfig, peer_addr: IPAddress) -> str:
    """The northbound URL of the peer's own address, for this node's 503 answers."""
    return f"https://{url_host(peer_addr)}:{cfg.manager.https_port}/v0"


def setup_logging(paths: NodePaths, name: str = "esc_haagent.log") -> None:
    paths.log_dir.mkdir(parents=True, exist_ok=True)
    handler = LogFile(paths.log_dir / name)  # 0640, never through a symlink
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)


def make_bgp(cfg: EscConfig, paths: NodePaths) -> ExabgpDriver | None:
    """The ExaBGP driver when ``[bgp]`` is configured. The anycast address is local on both
    nodes (on ``lo``); only the MASTER's route attracts traffic to it."""
    if cfg.bgp is None:
        return None
    hold_local_address(cfg.bgp.anycast_ip)
    return ExabgpDriver(cfg, paths)


def hold_local_address(addr: IPAddress) -> None:
    """The anycast address on ``lo`` (idempotent), so this node accepts what is routed to it."""
    run(["ip", "addr", "replace", f"{addr}/{addr.max_prefixlen}", "dev", "lo"])


def build_database(cfg: EscConfig, paths: NodePaths, self_addr: str) -> Database:
    """The database driver of this ``ha_mode``. ``drbd_on_cinder`` mounts the node's own volume
    here, before anything looks at the data directory."""
    assert cfg.ha is not None
    pg = PostgresDriver.from_config(cfg, paths, self_addr=self_addr)
    if cfg.ha.ha_mode == "drbd":
        _refresh_access(pg)
        return pg
    volume = Volume(resolve_device(cfg.ha, cfg.database), mountpoint_of(paths))
    if cfg.ha.ha_mode == "cinder":
        return SharedVolumeDatabase(pg, volume, VolumeLease(volume.device))
    volume.mount()
    _refresh_access(pg)
    return pg


def _refresh_access(pg: PostgresDriver) -> None:
    """A PostgreSQL still running from before this agent (an upgrade without a restart of the
    database) gets this version's local access rules now. Best effort: a failure is logged,
    and the next start of the database writes them anyway."""
    try:
        pg.refresh_access()
    except (EscError, OSError) as exc:
        logging.getLogger("esc.agent").warning("database access rules not refreshed: %s", exc)


def build_agent(cfg: EscConfig, paths: NodePaths, host: HostFacts) -> Agent:
    if cfg.ha is None or cfg.ha.ha_mode == "no_ha":
        raise ConfigError("ha", "HA is not configured (run `escadm ha set`)")
    ha = cfg.ha
    idx, self_addr, peer_addr = own_address(cfg, host)
    name, peer_name = ha.node_names[idx], ha.node_names[1 - idx]
    dcfg = DecideConfig(
        node_name=name,
        peer_name=peer_name,
        first_node=idx == 0,
        policy=cfg.replication.on_standby_loss,
        standby_loss_grace_s=cfg.replication.standby_loss_grace_s,
        health_failures=cfg.agent.health_failures,
        peer_agent_timeout_s=cfg.agent.heartbeat_timeout_s,
        gateway=str(ha.gateway_ip) if ha.gateway_ip else None,
        mode="shared" if ha.ha_mode == "cinder" else "replicated",
        quorum=ha.quorum == "etcd",
        # keepalived's election from FAULT (about 4 adverts) and two cycles, at most half the
        # lease: a standby comes that close to taking the key only when the holder has not
        # renewed for half a lease less a renewal and a look
        min_free_bytes=cfg.database.min_free_mb << 20,
        vrrp_lead_s=min(4 * ha.advert_int + 2 * cfg.agent.cycle_s, cfg.quorum_cfg.lease_ttl_s / 2),
    )
    wake = threading.Event()
    member = keeper = None
    if dcfg.quorum:  # (before anything starts: a missing certificate refuses the start)
        member = build_member(cfg, paths, name)
        keeper = build_keeper(cfg, paths, name, on_change=wake.set)
    # Replication and the peer API over TLS: this node's certificate, issued if due. (cinder
    # mode replicates nothing and has no pair CA: its peer API is authenticated by the MAC.)
    peer_tls = None
    if ha.ha_mode != "cinder":
        pki.ensure_node(paths.pki_dir, name, [str(self_addr)], make_ca=not dcfg.quorum)
        peer_tls = PeerTls.in_dir(paths.pki_dir)
    vrrp = KeepalivedDriver(cfg, paths, self_addr, on_event=wake.set)
    db = build_database(cfg, paths, str(self_addr))
    # A peer view must go stale before keepalived's master-down timer (~3 adverts) expires:
    # else a dead primary's last view ("serving") makes us refuse the VIP and hold down.
    peer_timeout = min(cfg.agent.peer_timeout_s, 2 * ha.advert_int)
    peer = PeerPoller(
        str(peer_addr),
        cfg.agent.peer_port,
        cfg.agent.peer_secret,
        interval=min(0.1, cfg.agent.cycle_s, peer_timeout / 2),
        timeout=peer_timeout,
        on_change=wake.set,
        self_name=name,
        peer_name=peer_name,
        tls=peer_tls,
    )
    gateway = (
        GatewayProbe(str(ha.gateway_ip), on_change=wake.set) if ha.gateway_ip is not None else None
    )
    service = ManagedService(paths, primary_url=peer_api_url(cfg, peer_addr), cfg=cfg)
    bgp = make_bgp(cfg, paths)
    agent = Agent(
        cfg=cfg,
        paths=paths,
        dcfg=dcfg,
        peer_host=str(peer_addr),
        vrrp=vrrp,
        vip=VipDriver(ha.kad_vip.address, ha.vip_iface),
        db=db,
        service=service,
        peer=peer,
        gateway=gateway,
        history=History(paths.data_dir / "history.jsonl"),
        bgp=bgp,
        make_bgp=lambda new: make_bgp(new, paths),
        long_runner=Threaded(wake.set),  # a clone may take hours: the cycle goes on
        quorum=keeper,
    )
    agent.wake = wake
    agent.endpoints = endpoints(str(self_addr), cfg.agent.monitor_port)
    # Started by Agent.start(), not here: constructing the agent starts nothing.
    agent.starters = [
        lambda: serve_unix(paths.run_dir / "agent.sock", agent.handle_local),
        # the portal's view, for esc-manager's user: reads only
        lambda: serve_unix(
            paths.agent_status_socket,
            read_only(agent.handle_local),
            owner=service.account.owner if service.account else None,
        ),
        lambda: serve_peer(
            str(self_addr),
            cfg.agent.peer_port,
            cfg.agent.peer_secret,
            agent.handle_peer,
            self_name=name,
            peer_name=peer_name,
            tls=peer_tls,
        ),
        *(
            [lambda: start_monitor(cfg, paths, name, str(self_addr), agent)]
            if cfg.agent.monitor_port is not None
            else []
        ),
        peer.start,
        service.start_checks,
        *([gateway.start] if gateway is not None else []),
    ]
    if member is not None and keeper is not None:
        agent.starters += [member.start, keeper.start]
        agent.supervised.append(member.ensure_running)
        # On a planned stop, after the service and the VIP: the key is handed over at once.
        agent.stoppers += [keeper.stop, member.stop]
    return agent


def start_monitor(
    cfg: EscConfig, paths: NodePaths, name: str, self_addr: str, agent: Agent
) -> None:
    """The monitoring listener (esc.agent.monitor_http) with this node's certificate."""
    assert cfg.ha is not None
    tls = certificate(paths.pki_dir, name, [self_addr], pair_ca=cfg.ha.ha_mode != "cinder")
    port = cfg.agent.monitor_port
    serve_monitor(str(cfg.agent.monitor_bind), port, agent.monitor_read, tls=tls)


def setup_failed(paths: NodePaths, message: str, notifier: Notifier) -> int:
    """The agent cannot start: say why on stderr (the journal under systemd), in its log, in
    <run>/agent_error (for `escadm status`) and as the unit's status line. Exit status 2."""
    print(f"esc-haagent: {message}", file=sys.stderr)
    if logging.getLogger().handlers:  # else logging would print it on stderr a second time
        logging.getLogger("esc.agent").error("not started: %s", message)
    setup_error.record(paths, message)
    notifier.status(f"not started: {message}")
    return 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="esc-haagent",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.parse_args(argv)
    paths = NodePaths.from_env()
    # Taken out of the environment before any child starts: see esc.agent.systemd.
    notifier = Notifier.from_env()
    try:
        for d in paths.all_dirs():
            d.mkdir(parents=True, exist_ok=True)
        setup_logging(paths)
    except OSError as exc:
        return setup_failed(paths, str(exc), notifier)
    try:
        cfg = load_config(paths.config_file)
        agent = build_agent(cfg, paths, SystemHostFacts())
    except (EscError, OSError) as exc:
        return setup_failed(paths, str(exc), notifier)
    setup_error.clear(paths)
    agent.notifier = notifier

    def _stop(signum: int, _frame: FrameType | None) -> None:
        logging.getLogger("esc.agent").info("signal %d: stopping", signum)
        agent.stop()
        sys.exit(0)

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    logging.getLogger("esc.agent").info("esc-haagent starting as %s", agent.dcfg.node_name)
    try:
        agent.start()
    except (EscError, OSError) as exc:  # an address or socket it cannot bind
        return setup_failed(paths, str(exc), notifier)
    agent.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
