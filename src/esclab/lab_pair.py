"""Running the HA pair in the lab: writing each node's config (as `escadm ha set` would, with
shared secrets, and a blank volume per node or a shared one for the Cinder modes), booting the
agents (as processes in the nodes' namespaces, or through the guide's commands on booted
hosts), waiting for one MASTER and one BACKUP, creating the API user, and asking a node what
it is doing: its agent's pid, its state, SQL on its database.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

from esc.config.schema import HaMode, NodePaths, load_config, parse_config, save_config
from esc.drivers.proc import pid_is_live
from esc.errors import LabError
from esclab import lab_prometheus
from esclab.guide import start_guide_pair
from esclab.lab_config import (
    LAB_API_USER,
    PAIR_TIMEOUT_S,
    lab_node_config,
    lab_vim_settings,
    lab_vip_spec,
)
from esclab.lab_quorum import (
    boot_witness,
    configure_witness,
    install_pki,
    pki_roots,
    quorum_fields,
)
from esclab.lab_state import LabState
from esclab.machine import loop_devices, ns_pids, start_daemon, wait_until
from esclab.run import Result, in_ns, run
from esclab.topology import NODES, Topology
from esclab.vim_settings import save_settings

VOLUME_SIZE = "2G"  # sparse; a database volume (ha_mode cinder / drbd_on_cinder)


class LabPair(LabState):
    """Configures, boots and queries the pair's nodes."""

    def start_pair(self, advert_int: float | None = None) -> None:
        """Configure both nodes (as `escadm ha set` would), boot their agents, wait for one
        MASTER and one BACKUP, create the API user."""
        if self.booted:
            if advert_int is not None:
                raise LabError("--hosts booted: the guide's commands set no advert_int")
            topo = self.topology()
            supervisors = start_guide_pair(
                self.root, topo, lab_vip_spec(topo.kind), quorum=self.quorum
            )
            pids = dict(self.read_state().get("pids", {}))
            pids.update({f"boot-{n}": pid for n, pid in supervisors.items()})
            self.write_state(pids=pids)
        else:
            self.configure_nodes(self.topology(), advert_int)
            if self.quorum:
                pids = dict(self.read_state().get("pids", {}))
                pids["witness"] = boot_witness(self.root)
                self.write_state(pids=pids)
            for node in NODES:
                self.boot_node(node)
        self._step("agents")
        if not self.wait_pair(PAIR_TIMEOUT_S):
            raise LabError(
                f"the pair did not form within {PAIR_TIMEOUT_S:.0f}s "
                f"(states: {[self.node_state(n) for n in NODES]}); see the nodes' esc_haagent.log"
            )
        self._create_api_user()
        self._start_prometheus()

    def _start_prometheus(self) -> None:
        """The lab's Prometheus in nb, scraping both agents (esclab.lab_prometheus)."""
        cfg = load_config(self.node_paths(NODES[0]).config_file)
        if cfg.ha is None or not cfg.agent.monitor_port:
            return
        topo = self.topology()
        targets: dict[str, tuple[str, str]] = {}
        cas: dict[bytes, Path] = {}
        for i, node in enumerate(NODES):
            named = cfg.ha.ha_node_list[i]
            try:  # nb's own network, in the family the certificate names
                dial = str(topo.address(node, topo.northbound_network, named.version).ip)
            except LabError:
                dial = str(named)
            targets[node] = (dial, str(named))
            pki_dir = self.node_paths(node).pki_dir
            for ca in (pki_dir / "ca.crt", pki_dir / "monitor" / "ca.crt"):
                if ca.is_file():
                    cas.setdefault(ca.read_bytes(), ca)
        pid = lab_prometheus.start(
            self.root / "prometheus", targets, cfg.agent.monitor_port, list(cas.values())
        )
        pids = dict(self.read_state().get("pids", {}))
        pids["prometheus"] = pid
        self.write_state(pids=pids, prometheus={"listen": lab_prometheus.LISTEN, "ns": "nb"})

    def configure_nodes(self, topo: Topology, advert_int: float | None = None) -> None:
        """Write each node's esc.toml as `escadm ha set` would, with shared secrets."""
        secret = secrets.token_urlsafe(32)  # as `escadm ha set` generates it
        password = secrets.token_urlsafe(24)
        state = self.read_state()
        mode: HaMode = state.get("ha_mode", "drbd")
        cfg = None
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
            if self.quorum:
                data["ha"].update(quorum_fields(topo))
                if state.get("quorum_settings"):
                    data["quorum"] = dict(state["quorum_settings"])
            cfg = parse_config(data)  # validated like any config
            paths = self.node_paths(host)
            save_config(cfg, paths.config_file)
            save_settings(lab_vim_settings(self.root), paths)  # the lab VIM's, beside it
        nodes = {n: self.node_paths(n) for n in NODES}
        if self.quorum and cfg is not None:
            configure_witness(self.root, cfg)
            install_pki(self.root, topo, pki_roots(self.root, nodes))
        else:  # the pair CA's certificates for replication over TLS, as at pairing
            install_pki(self.root, topo, nodes)

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
        pids = dict(self.read_state().get("pids", {}))
        pids[f"agent-{host}"] = start_daemon(host, paths.root, "esc-haagent")
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
