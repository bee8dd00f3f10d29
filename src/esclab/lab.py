"""Build, inspect and tear down the lab: hosts in network namespaces on one machine.

Everything the lab makes is named here and recorded in ``<root>/lab.json``, so ``down`` (and a
later ``up`` that finds a lab left behind by a killed run) removes exactly what the lab made:
its namespaces (with their veths and bridges), the processes inside them, its mounts and its
directory. Nothing else on the machine is touched.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from esc.addresses import url_host
from esc.config.schema import (
    AgentConfig,
    BgpConfig,
    EscConfig,
    HaConfig,
    HaMode,
    ManagerConfig,
    NodePaths,
    ReplicationConfig,
    Vip,
    load_config,
    parse_config,
    save_config,
    write_atomic,
)
from esc.drivers.proc import pid_is_live
from esc.errors import CommandError, LabError
from esclab.booted import BootedNode
from esclab.guide import start_guide_pair
from esclab.run import Result, in_ns, run
from esclab.topology import (
    HOSTS,
    NODES,
    SHORT,
    SWITCH_NS,
    Topology,
    TopologyKind,
    build_topology,
)
from esclab.vim import remove_all_blocking
from esclab.vim_settings import LabVimSettings, save_settings

HostKind = Literal["process", "booted"]  # what a controller node is
DEFAULT_ROOT = Path("/var/tmp/esc-lab")
VOLUME_SIZE = "2G"  # sparse; a database volume (ha_mode cinder / drbd_on_cinder)
IMAGE_SIZE = "4G"  # sparse; each node's /var/lib/esc is its own ext4 filesystem (for diskfull)


def lab_root() -> Path:
    return Path(os.environ.get("ESC_LAB_ROOT", str(DEFAULT_ROOT)))


def existing_namespaces() -> set[str]:
    out = run(["ip", "-j", "netns", "list"], check=False).stdout.strip()
    if not out:
        return set()
    return {entry["name"] for entry in json.loads(out)}


def ns_pids(ns: str) -> list[int]:
    res = run(["ip", "netns", "pids", ns], check=False)
    return [int(p) for p in res.stdout.split() if p.isdigit()]


def kill_all_in(ns: str, timeout: float = 10.0) -> int:
    """SIGKILL every process in ``ns`` until none is left (a supervisor may respawn one)."""
    seen: set[int] = set()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = [p for p in ns_pids(ns) if pid_is_live(p)]
        if not alive:
            break
        for pid in alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        seen.update(alive)
        time.sleep(0.02)
    return len(seen)


def wait_until(pred: Callable[[], bool], timeout: float, step: float = 0.05) -> bool:
    """Poll ``pred`` until true or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        if pred():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(step)


@dataclass
class UpResult:
    created: bool  # False: a running lab was found and left as it is
    cleaned_stale: bool


class Lab:
    """The lab on this machine. ``fail_at`` makes ``up`` fail at a named step (tests)."""

    def __init__(self, root: Path | None = None, fail_at: str | None = None) -> None:
        self.root = root or lab_root()
        self.fail_at = fail_at

    # --- state ------------------------------------------------------------------------------

    @property
    def state_file(self) -> Path:
        return self.root / "lab.json"

    def read_state(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return {}
        return data

    def write_state(self, **changes: Any) -> None:
        state = self.read_state()
        state.update(changes)
        write_atomic(self.state_file, json.dumps(state, indent=2, sort_keys=True))

    def topology(self) -> Topology:
        kind = self.read_state().get("topology")
        if kind not in ("single", "multi"):
            raise LabError("no lab is up (run `escadm lab up`)")
        return build_topology(kind)

    @property
    def booted(self) -> bool:
        """The controller nodes are booted hosts (systemd-nspawn), not processes."""
        return self.read_state().get("hosts") == "booted"

    def booted_node(self, host: str) -> BootedNode:
        if host not in NODES:
            raise LabError(f"{host} is not a controller node ({', '.join(NODES)})")
        return BootedNode(self.root, host)

    def node_paths(self, host: str) -> NodePaths:
        """The node's files as seen from here: its root directory, or, on a booted host, the
        running system's (with the default paths: /etc/esc, /var/lib/esc, /run/esc)."""
        if host not in NODES:
            raise LabError(f"{host} is not a controller node ({', '.join(NODES)})")
        if self.booted:
            return NodePaths(self.booted_node(host).file_root())
        return NodePaths(self.root / "nodes" / host)

    def _lab_namespaces(self) -> set[str]:
        return (set(HOSTS) | {SWITCH_NS}) & existing_namespaces()

    def exists(self) -> bool:
        return self.state_file.exists() or bool(self._lab_namespaces())

    def is_running(self) -> bool:
        """Up, complete, and its router process alive. Anything else that exists is stale."""
        state = self.read_state()
        if state.get("status") != "up":
            return False
        if self._lab_namespaces() != set(self.topology().namespaces):
            return False
        pid = state.get("pids", {}).get("bird")
        return isinstance(pid, int) and pid_is_live(pid)

    # --- up ---------------------------------------------------------------------------------

    def up(
        self,
        kind: TopologyKind = "single",
        pair: bool = True,
        advert_int: float | None = None,
        ha_mode: HaMode = "drbd",
        heartbeat: int = 4,
        hosts: HostKind = "process",
    ) -> UpResult:
        """Build the hosts and (unless ``pair`` is False) start the HA pair in them.

        ``ha_mode`` cinder gives the pair one shared volume (a loop device both nodes see, as
        a Cinder volume attachable to either VM); drbd_on_cinder gives each node its own.
        ``hosts`` booted makes the two controller nodes booted Debian systems with the package
        installed and configured by the guide's commands (``esclab.guide``)."""
        if hosts == "booted" and (ha_mode != "drbd" or heartbeat != 4):
            raise LabError("--hosts booted: only --ha_mode drbd and --heartbeat 4 for now")
        if self.is_running():
            return UpResult(created=False, cleaned_stale=False)
        stale = self.exists()
        if stale:
            self.down()
        topo = build_topology(kind)
        try:
            self.write_state(hosts=hosts)
            self._build(topo)
            if heartbeat not in (4, 6):
                raise LabError("--heartbeat: 4 or 6")
            self.write_state(ha_mode=ha_mode, heartbeat=heartbeat)
            if pair:
                self.start_pair(advert_int)
        except BaseException:
            self.down()
            raise
        return UpResult(created=True, cleaned_stale=stale)

    def _step(self, name: str) -> None:
        if self.fail_at == name:
            raise LabError(f"injected failure at step {name!r}")

    def _build(self, topo: Topology) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o755)
        self.write_state(status="building", topology=topo.kind, pids={})
        for ns in topo.namespaces:
            run(["ip", "netns", "add", ns])
            run(["ip", "-n", ns, "link", "set", "lo", "up"])
            # Keep IPv6 addresses across link down (they are flushed otherwise), no DAD delays.
            run(
                in_ns(
                    ns,
                    "sysctl",
                    "-qw",
                    "net.ipv6.conf.all.keep_addr_on_down=1",
                    "net.ipv6.conf.default.keep_addr_on_down=1",
                    "net.ipv6.conf.all.accept_dad=0",
                    "net.ipv6.conf.default.accept_dad=0",
                    # No ICMP redirects (set before the interfaces exist: the per-interface
                    # value counts too). In the single topology nb shares the nodes' LAN, and a
                    # redirect ("reach the anycast address via 192.0.2.10 directly") cached for
                    # minutes would outlive a failover and bypass the router's BGP route.
                    "net.ipv4.conf.all.send_redirects=0",
                    "net.ipv4.conf.default.send_redirects=0",
                    "net.ipv4.conf.all.accept_redirects=0",
                    "net.ipv4.conf.default.accept_redirects=0",
                    "net.ipv6.conf.all.accept_redirects=0",
                    "net.ipv6.conf.default.accept_redirects=0",
                )
            )
        self._step("namespaces")
        for net in topo.networks:
            run(
                [
                    "ip",
                    "-n",
                    SWITCH_NS,
                    "link",
                    "add",
                    net.bridge,
                    "type",
                    "bridge",
                    "stp_state",
                    "0",
                    "forward_delay",
                    "0",
                    "mcast_snooping",
                    "0",
                ]
            )
            run(["ip", "-n", SWITCH_NS, "link", "set", net.bridge, "up"])
        for att in topo.attachments:
            run(
                [
                    "ip",
                    "link",
                    "add",
                    att.iface,
                    "netns",
                    att.host,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    att.switch_port,
                    "netns",
                    SWITCH_NS,
                ]
            )
            net = topo.network(att.network)
            run(["ip", "-n", SWITCH_NS, "link", "set", att.switch_port, "master", net.bridge, "up"])
            for addr in att.addresses:
                extra = ["nodad"] if addr.version == 6 else []
                run(["ip", "-n", att.host, "addr", "add", str(addr), "dev", att.iface, *extra])
            run(["ip", "-n", att.host, "link", "set", att.iface, "up"])
        self._step("links")
        run(
            in_ns(
                "router",
                "sysctl",
                "-qw",
                "net.ipv4.ip_forward=1",
                "net.ipv6.conf.all.forwarding=1",
            )
        )
        for host, gw in topo.gateways.items():
            run(["ip", "-n", host, "route", "add", "default", "via", str(gw)])
        for host, gw6 in topo.gateways6.items():
            run(["ip", "-n", host, "-6", "route", "add", "default", "via", str(gw6)])
        if not self.booted:
            for node in NODES:
                self._make_node_root(node)
        self._step("nodes")
        self._start_router(topo)
        self._step("router")
        self.write_state(status="up")

    def start_pair(self, advert_int: float | None = None) -> None:
        """Configure both nodes (as `escadm ha set` would), boot their agents, wait for one
        MASTER and one BACKUP, create the API user."""
        if self.booted:
            if advert_int is not None:
                raise LabError("--hosts booted: the guide's commands set no advert_int")
            topo = self.topology()
            supervisors = start_guide_pair(self.root, topo, lab_vip_spec(topo.kind))
            pids = dict(self.read_state().get("pids", {}))
            pids.update({f"boot-{n}": pid for n, pid in supervisors.items()})
            self.write_state(pids=pids)
        else:
            self.configure_nodes(self.topology(), advert_int)
            for node in NODES:
                self.boot_node(node)
        self._step("agents")
        if not self.wait_pair(PAIR_TIMEOUT_S):
            raise LabError(
                f"the pair did not form within {PAIR_TIMEOUT_S:.0f}s "
                f"(states: {[self.node_state(n) for n in NODES]}); see the nodes' esc_haagent.log"
            )
        self._create_api_user()

    def _make_node_root(self, node: str) -> None:
        paths = self.node_paths(node)
        for d in paths.all_dirs():
            d.mkdir(parents=True, exist_ok=True)
        image = self.root / "images" / f"{node}.img"
        image.parent.mkdir(parents=True, exist_ok=True)
        run(["truncate", "-s", IMAGE_SIZE, str(image)])
        run(["mkfs.ext4", "-q", "-F", "-m", "0", str(image)])
        run(["mount", "-o", "loop", str(image), str(paths.data_dir)])
        for p in (self.root / "nodes", paths.root, *_parents_within(paths.data_dir, paths.root)):
            os.chmod(p, 0o755)

    def _start_router(self, topo: Topology) -> None:
        rdir = self.root / "router"
        rdir.mkdir(parents=True, exist_ok=True)
        conf = rdir / "bird.conf"
        conf.write_text(render_bird_conf(topo))
        log = open(rdir / "bird.log", "ab")  # noqa: SIM115 - handed to the child
        # -f: foreground (we own the PID); -s: our own control socket, /run is shared (gotcha 3).
        proc = subprocess.Popen(
            in_ns("router", "bird", "-f", "-c", str(conf), "-s", str(rdir / "bird.ctl")),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        if not wait_until(lambda: (rdir / "bird.ctl").exists() or proc.poll() is not None, 10):
            raise LabError("bird did not start (see router/bird.log)")
        if proc.poll() is not None:
            raise LabError(f"bird exited with {proc.returncode} (see {rdir / 'bird.log'})")
        self.write_state(pids={"bird": proc.pid})

    def configure_nodes(self, topo: Topology, advert_int: float | None = None) -> None:
        """Write each node's esc.toml as `escadm ha set` would, with shared secrets."""
        secret = secrets.token_urlsafe(24)
        password = secrets.token_urlsafe(24)
        state = self.read_state()
        mode: HaMode = state.get("ha_mode", "drbd")
        for host in NODES:
            cfg = lab_node_config(
                topo, host, secret, password, lab_vim=True, heartbeat=int(state.get("heartbeat", 4))
            )
            data = cfg.model_dump(mode="json")
            if advert_int is not None:
                data["ha"]["advert_int"] = advert_int
            if mode != "drbd":
                volume = "shared" if mode == "cinder" else host
                data["ha"]["ha_mode"] = mode
                data["ha"]["db_volume_path"] = str(self.make_volume(volume))
            cfg = parse_config(data)  # validated like any config
            paths = self.node_paths(host)
            save_config(cfg, paths.config_file)
            save_settings(lab_vim_settings(self.root), paths)  # the lab VIM's, beside it

    def make_volume(self, name: str) -> Path:
        """A blank block volume (loop device over a sparse image); the same device if it
        exists."""
        image = self.root / "volumes" / f"{name}.img"
        found = loop_devices(image)
        if found:
            return found[0]
        image.parent.mkdir(parents=True, exist_ok=True)
        # blank, as a fresh Cinder volume: the agent that first mounts it makes the file system
        run(["truncate", "-s", VOLUME_SIZE, str(image)])
        return Path(run(["losetup", "--find", "--show", str(image)]).stdout.strip())

    def boot_node(self, host: str) -> None:
        """Start what the node runs at boot: its agent, when the node has a config."""
        paths = self.node_paths(host)
        if not paths.config_file.exists():
            return
        paths.log_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, ESC_ROOT=str(paths.root))
        agent = str(Path(sys.executable).parent / "esc-haagent")
        with open(paths.log_dir / "esc_haagent.stdout", "ab") as log:
            proc = subprocess.Popen(
                in_ns(host, agent),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env=env,
            )
        pids = dict(self.read_state().get("pids", {}))
        pids[f"agent-{host}"] = proc.pid
        self.write_state(pids=pids)

    def agent_alive(self, host: str) -> bool:
        return self.agent_pid(host) is not None

    def agent_pid(self, host: str) -> int | None:
        for pid in ns_pids(host):
            try:
                if Path(f"/proc/{pid}/comm").read_text().strip() == "esc-haagent":
                    return pid if pid_is_live(pid) else None
            except OSError:
                continue
        return None

    def master(self) -> str | None:
        """The node whose live agent says MASTER (a killed node's state file goes stale)."""
        for host in NODES:
            if self.node_state(host) == "MASTER" and self.agent_alive(host):
                return host
        return None

    def _create_api_user(self) -> None:
        """The lab's northbound user, created on the primary (replicated to the standby)."""
        master = self.master()
        if master is None:
            raise LabError("no MASTER to create the API user on")
        password = secrets.token_urlsafe(12)
        if self.booted:
            self.booted_node(master).exec(
                ["escadm", "user", "add", LAB_API_USER, "--password-stdin"], input_=password + "\n"
            )
            self.write_state(api={"user": LAB_API_USER, "password": password})
            return
        escadm = str(Path(sys.executable).parent / "escadm")
        env = dict(os.environ, ESC_ROOT=str(self.node_paths(master).root))
        res = subprocess.run(
            in_ns(master, escadm, "user", "add", LAB_API_USER, "--password-stdin"),
            input=password + "\n",
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
        if res.returncode != 0:
            raise LabError(f"could not create the lab API user: {res.stderr.strip()}")
        self.write_state(api={"user": LAB_API_USER, "password": password})

    def psql(self, host: str, sql: str, timeout: float = 30.0, check: bool = False) -> Result:
        """Run SQL on a node's local database over its unix socket, as postgres."""
        sock = self.node_paths(host).pg_socket_dir
        if self.booted:
            sock = NodePaths(Path("/")).pg_socket_dir
        argv = [
            "runuser",
            "-u",
            "postgres",
            "--",
            "psql",
            "-h",
            str(sock),
            "-d",
            "esc",
            "-XAtq",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            sql,
        ]
        if self.booted:
            return self.booted_node(host).exec(argv, check=check, timeout=timeout)
        return run(in_ns(host, *argv), check=check, timeout=timeout)

    def node_state(self, host: str) -> str | None:
        try:
            return self.node_paths(host).state_file.read_text().strip() or None
        except OSError:
            return None

    def pair_ready(self) -> bool:
        return sorted(str(self.node_state(h)) for h in NODES) == ["BACKUP", "MASTER"]

    def wait_pair(self, timeout: float = 180.0) -> bool:
        """Wait for one MASTER and one BACKUP (first boot: initdb + clone included)."""
        return wait_until(self.pair_ready, timeout, step=0.2)

    # --- down -------------------------------------------------------------------------------

    def down(self) -> list[str]:
        """Remove everything the lab made; safe on a half-built or stale lab. Returns what went."""
        removed: list[str] = []
        namespaces = self._lab_namespaces()
        for node in NODES:
            booted = self.booted_node(node)
            if booted.is_running():
                booted.power_cut()
                removed.append(f"booted host {node}")
        for ns in sorted(namespaces):
            killed = kill_all_in(ns)
            if killed:
                removed.append(f"{killed} process(es) in {ns}")
        # The VIM's VMs live outside the lab's namespaces (each is its own).
        removed += remove_all_blocking(Path(lab_vim_settings(self.root).state_dir))
        for mnt in sorted(self._mounts(), reverse=True):
            run(["umount", "-l", mnt], check=False)
            removed.append(f"mount {mnt}")
        for image in sorted((self.root / "volumes").glob("*.img")):
            for dev in loop_devices(image):
                run(["losetup", "-d", str(dev)], check=False)
                removed.append(f"volume {dev}")
        for ns in sorted(namespaces):
            # Deleting a namespace takes its veths and bridges with it.
            run(["ip", "netns", "del", ns], check=False)
            removed.append(f"namespace {ns}")
        if self.root.exists():
            run(["rm", "-rf", "--one-file-system", str(self.root)], check=False)
            removed.append(f"directory {self.root}")
        return removed

    def _mounts(self) -> list[str]:
        prefix = str(self.root).rstrip("/") + "/"
        out: list[str] = []
        for line in Path("/proc/self/mounts").read_text().splitlines():
            mnt = line.split()[1].replace("\\040", " ")
            if mnt.startswith(prefix):
                out.append(mnt)
        return out

    # --- inspect ----------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        state = self.read_state()
        if not self.exists():
            return {"up": False}
        running = self.is_running()
        result: dict[str, Any] = {
            "up": running,
            "stale": not running,
            "root": str(self.root),
            "topology": state.get("topology"),
            "hosts": {},
        }
        if not running:
            return result
        topo = self.topology()
        result["networks"] = {
            n.name: {"ipv4": str(n.v4) if n.v4 else None, "ipv6": str(n.v6) if n.v6 else None}
            for n in topo.networks
        }
        for host in topo.hosts:
            info: dict[str, Any] = {"interfaces": host_interfaces(host)}
            if host in NODES:
                info["root"] = str(
                    self.booted_node(host).root if self.booted else self.node_paths(host).root
                )
                info["state"] = self.node_state(host)
            result["hosts"][host] = info
        result["faults"] = state.get("faults", [])
        cfg = load_config(self.node_paths(NODES[0]).config_file)
        if cfg.ha is not None:
            vip = cfg.ha.kad_vip.address
            host = url_host(vip)
            result["vip"] = str(vip)
            result["pair_ready"] = self.pair_ready()
            api = dict(state.get("api", {}))
            api["https_url"] = f"https://{host}:{cfg.manager.https_port}/v0"
            # plain HTTP only where the config turns it on (the guide's commands do not)
            base = (
                f"https://{{}}:{cfg.manager.https_port}/v0"
                if cfg.manager.http_port is None
                else f"http://{{}}:{cfg.manager.http_port}/v0"
            )
            api["url"] = base.format(host)
            # each node by its own address on the VIP's network (a client that reaches both)
            topo = self.topology()
            net = topo.northbound_network
            api["node_urls"] = {
                node: base.format(url_host(topo.address(node, net, vip.version).ip))
                for node in NODES
            }
            result["api"] = api
        return result

    def exec_argv(self, host: str, argv: list[str]) -> tuple[list[str], dict[str, str]]:
        """The argv and environment to run ``argv`` inside ``host``."""
        topo = self.topology()
        if host not in topo.hosts:
            raise LabError(f"no host {host!r} (have: {', '.join(topo.hosts)})")
        env = dict(os.environ)
        # escadm and the other tools of this virtualenv are found by name inside the host.
        env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '/usr/bin:/bin')}"
        if host in NODES and self.booted:
            return self.booted_node(host).argv(argv), dict(os.environ)
        if host in NODES:
            env["ESC_ROOT"] = str(self.node_paths(host).root)
            agent = self.agent_pid(host)
            if agent is not None:
                # The node's own mount table (a volume the agent mounted is seen there only).
                return ["nsenter", f"--target={agent}", "--mount", "--net", *argv], env
        return in_ns(host, *argv), env


def loop_devices(image: Path) -> list[Path]:
    """Loop devices backed by ``image``."""
    if not image.exists():
        return []
    out = run(["losetup", "-n", "-O", "NAME", "-j", str(image)], check=False).stdout
    return [Path(line.strip()) for line in out.splitlines() if line.strip()]


def host_interfaces(ns: str) -> dict[str, list[str]]:
    """Interface -> addresses (with prefix) inside ``ns``, loopback left out."""
    try:
        out = run(["ip", "-n", ns, "-j", "addr", "show"]).stdout
    except CommandError:
        return {}
    result: dict[str, list[str]] = {}
    for link in json.loads(out or "[]"):
        if link.get("ifname") == "lo":
            continue
        result[link["ifname"]] = [
            f"{a['local']}/{a['prefixlen']}"
            for a in link.get("addr_info", [])
            if a.get("scope") != "link"
        ]
    return result


def _parents_within(path: Path, top: Path) -> list[Path]:
    out = []
    p = path
    while p != top and top in p.parents:
        out.append(p)
        p = p.parent
    return out


# multi: the seed's layout, an IPv6 northbound VIP on its own network over IPv4 heartbeats
LAB_VIP = {"single": "192.0.2.100", "multi": "2001:db8:100::fc"}  # heartbeats over IPv4
LAB_VIP6 = {"single": "2001:db8::100", "multi": "2001:db8:100::fc"}


def lab_vip(kind: str, heartbeat: int = 4) -> str:
    """The lab's VIP: IPv6 with IPv6 heartbeats, and always on multi (the seed's layout)."""
    return LAB_VIP6[kind] if heartbeat == 6 or kind == "multi" else LAB_VIP[kind]


def lab_vip_spec(kind: str, heartbeat: int = 4) -> str:
    """The VIP as ``--kad_vip`` takes it (with the subnet's prefix for IPv6)."""
    vip = lab_vip(kind, heartbeat)
    return f"[{vip}/64]" if ":" in vip else vip


LAB_API_USER = "admin"
LAB_ANYCAST = "203.0.113.200"  # announced by the primary over BGP; 203.0.113/24 is not routed
ROUTER_AS = 65000
NODES_AS = 65001


def render_bird_conf(topo: Topology) -> str:
    """The router's BIRD 2: one BGP session per controller node (routes in, nothing out) and
    the learned routes installed in the router's kernel table, so ``nb`` reaches the anycast
    address through whichever node announces it."""
    nb = topo.northbound_network
    me = topo.address("router", nb).ip
    sessions = "".join(
        f"""
protocol bgp {SHORT[node]} {{
    local {me} as {ROUTER_AS};
    neighbor {topo.address(node, nb).ip} as {NODES_AS};
    hold time 9;
    connect retry time 1;
    error wait time 1, 5;
    ipv4 {{ import all; export none; }};
}}
"""
        for node in NODES
    )
    return f"""\
# the lab router (generated by esclab): read its routes with
#   escadm lab exec router -- birdc -s {"{lab root}"}/router/bird.ctl show route
router id {me};
protocol device {{ scan time 10; }}
protocol kernel {{ ipv4 {{ import none; export all; }}; }}
{sessions}"""


PAIR_TIMEOUT_S = 180.0  # first boot: initdb, clone, election


def lab_node_config(
    topo: Topology,
    host: str,
    secret: str,
    password: str,
    lab_vim: bool = False,
    heartbeat: int = 4,
) -> EscConfig:
    """The config `escadm ha set` would write on ``host`` in this lab; with ``lab_vim`` its
    manager deploys through the lab VIM (settings: :func:`lab_vim_settings`)."""
    sync = topo.sync_network
    nodes = tuple(topo.address(n, sync, heartbeat).ip for n in NODES)
    nb = topo.northbound_network
    vip_iface = topo.attachment(host, nb).iface
    ha = HaConfig(
        ha_node_list=(nodes[0], nodes[1]),
        kad_vip=Vip.parse(f"{lab_vip_spec(topo.kind, heartbeat)}:{vip_iface}"),
        kad_vif=topo.attachment(host, sync).iface,
        # the gateway the agent pings, of the VIP's family (as `escadm ha set` requires)
        gateway_ip=topo.address("router", nb, 6 if ":" in lab_vip(topo.kind, heartbeat) else 4).ip,
        node_names=(NODES[0], NODES[1]),
    )
    bgp = BgpConfig(
        local_ip=topo.address(host, nb).ip,
        anycast_ip=ipaddress.ip_address(LAB_ANYCAST),
        remote_ip=topo.address("router", nb).ip,
        local_as=NODES_AS,
        remote_as=ROUTER_AS,
        local_router_id=topo.address(host, nb).ip,
    )
    return EscConfig(
        node_name=host,
        ha=ha,
        bgp=bgp,
        replication=ReplicationConfig(password=password),
        agent=AgentConfig(peer_secret=secret),
        manager=ManagerConfig(
            http_port=8080,
            vim="lab" if lab_vim else "fake",
        ),
    )


def lab_vim_settings(root: Path) -> LabVimSettings:
    """The lab VIM's settings for the lab at ``root``: its registry under the lab's directory,
    shared by both nodes' managers (``remove_all_blocking`` clears it on ``down``)."""
    return LabVimSettings(state_dir=str(root / "vim"))
