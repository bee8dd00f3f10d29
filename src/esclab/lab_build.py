"""Building the lab's hosts and tearing them down: the network namespaces with their sysctls,
the bridges in the switch namespace and a veth per attachment, addresses and default routes,
each process node's root directory with its loop-mounted data filesystem, and the router's
BIRD. ``down`` removes all the lab made, on a half-built or stale lab too: booted hosts, the
processes in its namespaces, the lab VIM's VMs, its mounts, loop devices, namespaces and
directory.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from esc.errors import LabError
from esclab.booted import BootedNode
from esclab.lab_config import lab_vim_settings, render_bird_conf
from esclab.lab_state import LabState
from esclab.machine import kill_all_in, loop_devices, wait_until
from esclab.run import in_ns, run
from esclab.topology import NODES, SWITCH_NS, WITNESS, Topology
from esclab.vim import remove_all_blocking

IMAGE_SIZE = "4G"  # sparse; each node's /var/lib/esc is its own ext4 filesystem (for diskfull)


class LabBuilder(LabState):
    """Builds the lab's hosts (``_build``) and removes everything the lab made (``down``)."""

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

    # --- down -------------------------------------------------------------------------------

    def down(self) -> list[str]:
        """Remove everything the lab made; safe on a half-built or stale lab. Returns what went."""
        removed: list[str] = []
        namespaces = self._lab_namespaces()
        for host in (*NODES, WITNESS):
            booted = BootedNode(self.root, host)
            if booted.is_running():
                booted.power_cut()
                removed.append(f"booted host {host}")
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


def _parents_within(path: Path, top: Path) -> list[Path]:
    out = []
    p = path
    while p != top and top in p.parents:
        out.append(p)
        p = p.parent
    return out
