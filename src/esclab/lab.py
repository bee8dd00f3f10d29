"""Build, inspect and tear down the lab: hosts in network namespaces on one machine.

Everything the lab makes is named here and recorded in ``<root>/lab.json``, so ``down`` (and a
later ``up`` that finds a lab left behind by a killed run) removes exactly what the lab made:
its namespaces (with their veths and bridges), the processes inside them, its mounts and its
directory. Nothing else on the machine is touched.

The code is split by job: :mod:`esclab.lab_state` (``lab.json`` and what follows from it),
:mod:`esclab.lab_build` (namespaces, links, router, node roots; ``down``),
:mod:`esclab.lab_pair` (the pair's configs, agents and queries), :mod:`esclab.lab_config`
(addresses, AS numbers, the router's and nodes' configs) and :mod:`esclab.machine`
(namespaces, processes, loop devices, polling). :class:`Lab` puts them together with ``up``,
``status`` and ``exec_argv``; every name is importable from here as before.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from esc.addresses import url_host
from esc.config.schema import HaMode, load_config
from esc.errors import LabError
from esclab.lab_build import IMAGE_SIZE, LabBuilder
from esclab.lab_config import (
    LAB_ANYCAST,
    LAB_API_USER,
    LAB_VIP,
    LAB_VIP6,
    NODES_AS,
    PAIR_TIMEOUT_S,
    ROUTER_AS,
    lab_node_config,
    lab_vim_settings,
    lab_vip,
    lab_vip_spec,
    render_bird_conf,
)
from esclab.lab_pair import VOLUME_SIZE, LabPair
from esclab.lab_state import DEFAULT_ROOT, HostKind, lab_root
from esclab.machine import (
    existing_namespaces,
    host_interfaces,
    kill_all_in,
    loop_devices,
    ns_pids,
    wait_until,
)
from esclab.run import in_ns
from esclab.topology import NODES, TopologyKind, build_topology

__all__ = [
    "DEFAULT_ROOT",
    "IMAGE_SIZE",
    "LAB_ANYCAST",
    "LAB_API_USER",
    "LAB_VIP",
    "LAB_VIP6",
    "NODES",  # esclab.topology's, imported from here by bench/
    "NODES_AS",
    "PAIR_TIMEOUT_S",
    "ROUTER_AS",
    "VOLUME_SIZE",
    "HostKind",
    "Lab",
    "UpResult",
    "existing_namespaces",
    "host_interfaces",
    "kill_all_in",
    "lab_node_config",
    "lab_root",
    "lab_vim_settings",
    "lab_vip",
    "lab_vip_spec",
    "loop_devices",
    "ns_pids",
    "render_bird_conf",
    "wait_until",
]


@dataclass
class UpResult:
    created: bool  # False: a running lab was found and left as it is
    cleaned_stale: bool


class Lab(LabPair, LabBuilder):
    """The lab on this machine. ``fail_at`` makes ``up`` fail at a named step (tests)."""

    # --- up ---------------------------------------------------------------------------------

    def up(
        self,
        kind: TopologyKind = "single",
        pair: bool = True,
        advert_int: float | None = None,
        ha_mode: HaMode = "drbd",
        heartbeat: int = 4,
        hosts: HostKind = "process",
        quorum: str = "none",
        quorum_settings: dict[str, Any] | None = None,
    ) -> UpResult:
        """Build the hosts and (unless ``pair`` is False) start the HA pair in them.

        ``ha_mode`` cinder gives the pair one shared volume (a loop device both nodes see, as
        a Cinder volume attachable to either VM); drbd_on_cinder gives each node its own.
        ``hosts`` booted makes the two controller nodes booted Debian systems with the package
        installed and configured by the guide's commands (``esclab.guide``).
        ``quorum_settings``: the ``[quorum]`` section's fields (a benchmark's; validated by
        the schema like any config)."""
        if hosts == "booted" and (ha_mode != "drbd" or heartbeat != 4):
            raise LabError("--hosts booted: only --ha_mode drbd and --heartbeat 4 for now")
        if quorum not in ("none", "etcd"):
            raise LabError(f"--quorum: {quorum!r} is not none or etcd")
        if quorum == "etcd" and (ha_mode == "cinder" or heartbeat != 4):
            raise LabError("--quorum etcd: --heartbeat 4, not cinder, for now")
        if quorum_settings and quorum != "etcd":
            raise LabError("quorum settings without --quorum etcd")
        if quorum_settings and hosts == "booted":
            raise LabError("quorum settings: process hosts only (booted hosts get the guide's)")
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
            self.write_state(
                ha_mode=ha_mode,
                heartbeat=heartbeat,
                quorum=quorum,
                quorum_settings=dict(quorum_settings or {}),
            )
            if pair:
                self.start_pair(advert_int)
        except BaseException:
            self.down()
            raise
        return UpResult(created=True, cleaned_stale=stale)

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
        if "prometheus" in state:  # its HTTP API, from inside nb only
            prom = state["prometheus"]
            result["prometheus"] = {"url": f"http://{prom['listen']}", "ns": prom["ns"]}
        cfg = load_config(self.node_paths(NODES[0]).config_file)
        if cfg.ha is not None:
            vip = cfg.ha.kad_vip.address
            host = url_host(vip)
            result["vip"] = str(vip)
            result["pair_ready"] = self.pair_ready()
            api = dict(state.get("api", {}))
            api["https_url"] = f"https://{host}:{cfg.manager.https_port}/v0"
            # HTTPS always: plain HTTP (http_port, the lab's 8080) only redirects to it
            base = f"https://{{}}:{cfg.manager.https_port}/v0"
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
