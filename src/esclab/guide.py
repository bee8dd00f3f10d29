"""The pair on booted hosts, set up the way the ESC install guide says, and nothing else.

On each booted node: ``dpkg -i`` of the package built from this checkout (on the witness host
too, in quorum mode), then the guide's commands, in the guide's own argument syntax
(``--ha_node_list=<IP1> <IP2>``, ``--kad_vip= <ip>``, ``--kad_vif= <if>``), the one pairing
step (the shared secrets of node 0 given to node 1), quorum mode's steps of
docs/operations.md (section 15), and ``escadm reload``, which starts the agent under systemd
and enables it for the next boot.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from esc.errors import LabError
from esc.files import write_atomic
from esclab.booted import BootedNode
from esclab.image import ensure_image
from esclab.run import run
from esclab.topology import NODES, WITNESS, Topology

DIST_IN_NODE = "/mnt/esc-dist"  # the package directory, bound read-only into each node
CHECKOUT = Path(__file__).resolve().parents[2]


def build_deb(out_dir: Path, version: str | None = None, checkout: Path = CHECKOUT) -> Path:
    """The product's .deb: ``ESC_LAB_DEB`` if set (and no version asked for), else built from
    ``checkout`` (this one by default)."""
    given = os.environ.get("ESC_LAB_DEB")
    if given and version is None:
        path = Path(given)
        if not path.is_file():
            raise LabError(f"ESC_LAB_DEB={given}: no such file")
        out_dir.mkdir(parents=True, exist_ok=True)
        target = out_dir / path.name
        if not target.exists():
            target.write_bytes(path.read_bytes())
        return target
    argv = [str(checkout / "scripts" / "build-deb"), "--out", str(out_dir)]
    if version is not None:
        argv += ["--version", version]
    res = run(argv, timeout=1200)
    lines = res.stdout.strip().splitlines()
    if not lines or not Path(lines[-1]).is_file():
        raise LabError(f"build-deb printed no package path: {res.stdout[-500:]}")
    return Path(lines[-1])


def guide_ha_set(topo: Topology, host: str, vip_spec: str) -> list[str]:
    """``escadm ha set`` exactly in the guide's syntax, with this lab's addresses."""
    sync = topo.sync_network
    ips = [str(topo.address(n, sync, 4).ip) for n in NODES]
    nb = topo.northbound_network
    vif = topo.attachment(host, sync).iface
    vip_iface = topo.attachment(host, nb).iface
    gw = topo.address("router", nb, 6 if ":" in vip_spec.split("]", maxsplit=1)[0] else 4).ip
    return [
        "escadm", "ha", "set",
        f"--ha_node_list={ips[0]}", ips[1],
        "--kad_vip=", f"{vip_spec}:{vip_iface}",
        "--kad_vif=", vif,
        "--gateway_ip", str(gw),
    ]  # fmt: skip


def install(node: BootedNode, deb: Path) -> None:
    node.exec(["dpkg", "-i", f"{DIST_IN_NODE}/{deb.name}"], timeout=300)


def start_guide_pair(
    lab_root: Path, topo: Topology, vip_spec: str, quorum: bool = False
) -> dict[str, int]:
    """Boot both nodes (and, in quorum mode, the witness), install the package, run the
    guide's commands (docs/operations.md, section 15, for quorum mode). Returns the hosts'
    supervisor pids. The caller waits for the pair (and creates the API user)."""
    image = ensure_image()
    dist = lab_root / "dist"
    deb = build_deb(dist)
    pids: dict[str, int] = {}
    nodes = [BootedNode(lab_root, n) for n in NODES]
    witness = BootedNode(lab_root, WITNESS) if quorum else None
    hosts = [*nodes, *([witness] if witness is not None else [])]
    for host in hosts:
        host.prepare(image)
        pids[host.name] = host.power_on(bind_ro=[(dist, DIST_IN_NODE)])
    witness_ip = str(topo.address(WITNESS, topo.sync_network, 4).ip)
    for host in hosts:
        host.wait_booted()
        install(host, deb)
    for node in nodes:
        argv = guide_ha_set(topo, node.name, vip_spec)
        node.exec(argv + (["--quorum", "etcd", "--witness", witness_ip] if quorum else []))
    secrets = nodes[0].exec(["escadm", "ha", "secrets", "export"]).stdout
    nodes[1].exec(["escadm", "ha", "secrets", "import"], input_=secrets)
    if witness is not None:
        set_up_witness(nodes, witness)
    for node in nodes:
        node.exec(["escadm", "reload"], timeout=120)
    return pids


def set_up_witness(nodes: Sequence[BootedNode], witness: BootedNode) -> None:
    """docs/operations.md, section 15: the certificates made on node 0 (`escadm ha pki
    create`), each host's directory copied to it (the operator's scp, a file copy here) and
    installed (`escadm ha pki install`); the pair's config copied to the witness, whose agent
    unit is disabled and esc-witness enabled."""
    made = "/root/esc-pki"
    nodes[0].exec(["escadm", "ha", "pki", "create", made])
    src = nodes[0].file_root() / made.lstrip("/")
    for host in (*nodes, witness):
        dest = host.file_root() / "root" / "esc-pki-host"
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(src / host.name, dest)
        host.exec(["escadm", "ha", "pki", "install", "/root/esc-pki-host"])
        shutil.rmtree(dest)
    conf = witness.file_root() / "etc" / "esc" / "esc.toml"
    # 0600 from the start (it holds the pair's secrets), replaced atomically
    write_atomic(conf, (nodes[0].file_root() / "etc" / "esc" / "esc.toml").read_bytes(), 0o600)
    witness.exec(["systemctl", "disable", "--now", "esc-haagent.service"])
    witness.exec(["systemctl", "enable", "--now", "esc-witness.service"], timeout=120)
