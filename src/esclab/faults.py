"""Fault injection for the lab, and ``heal`` to undo it all.

Faults are recorded in lab.json so ``heal`` and ``status`` know what is in force. Rule builders
are pure functions (unit-tested); the functions that apply them are thin.
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path
from typing import Literal

from esc.drivers.proc import pid_is_live
from esc.errors import LabError
from esclab.guide import DIST_IN_NODE
from esclab.lab import Lab, ns_pids, wait_until
from esclab.lab_quorum import boot_witness
from esclab.run import in_ns, run
from esclab.topology import NODES, SWITCH_NS, WITNESS, Topology

# Components by process name (/proc/PID/comm, 15 chars at most).
COMPONENTS: dict[str, frozenset[str]] = {
    "agent": frozenset({"esc-haagent"}),
    "keepalived": frozenset({"keepalived"}),
    "postgres": frozenset({"postgres", "postmaster"}),
    "manager": frozenset({"esc-manager"}),
    "exabgp": frozenset({"exabgp"}),
    "bird": frozenset({"bird"}),
    "etcd": frozenset({"etcd"}),  # quorum mode's members (nodes and witness)
    "witness": frozenset({"esc-witness"}),
}
PartitionKind = Literal["vrrp", "db", "api", "etcd", "all"]
ETCD_PORTS = (2379, 2380)
NFT_TABLE = "esc_lab_fault"
PEER_API_PORT = 7400
DB_PORT = 5432


def comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def component_pids(host: str, component: str) -> list[int]:
    """PIDs of ``component`` (or every process, for ``all``) inside ``host``'s namespace."""
    pids = [p for p in ns_pids(host) if pid_is_live(p)]
    if component == "all":
        return pids
    names = COMPONENTS.get(component)
    if names is None:
        raise LabError(f"unknown component {component!r} (have: {', '.join(COMPONENTS)}, all)")
    return [p for p in pids if comm(p) in names]


def signal_component(lab: Lab, host: str, component: str, sig: signal.Signals) -> list[int]:
    if host not in lab.topology().hosts:
        raise LabError(f"no host {host!r}")
    pids = component_pids(host, component)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
    if sig == signal.SIGKILL and pids:
        wait_until(lambda: not any(pid_is_live(p) for p in pids), 10)
    _record(lab, f"{sig.name} {host} {component} ({len(pids)} process(es))")
    return pids


def _matches(only: PartitionKind) -> tuple[str, ...]:
    return {
        "vrrp": ("meta l4proto 112",),
        "db": (f"tcp dport {DB_PORT}", f"tcp sport {DB_PORT}"),
        "api": (f"tcp dport {PEER_API_PORT}", f"tcp sport {PEER_API_PORT}"),
        "etcd": tuple(f"tcp {d} {p}" for p in ETCD_PORTS for d in ("dport", "sport")),
        "all": ("",),
    }[only]


def partition_rules(topo: Topology, network: str, only: PartitionKind) -> dict[str, str]:
    """nft scripts per node that cut ``only`` traffic between the two nodes on ``network``."""
    return {
        me: _cut_script(topo, me, network, (peer,), only)
        for me, peer in ((NODES[0], NODES[1]), (NODES[1], NODES[0]))
    }


def isolate_rules(topo: Topology, host: str, network: str, only: PartitionKind) -> str:
    """The nft script that cuts ``only`` traffic between ``host`` and every other host on
    ``network`` but the router (a node cut from its peer and the witness, its clients still
    reaching it)."""
    others = tuple(
        a.host
        for a in topo.attachments
        if a.network == network and a.host not in (host, "router", "nb")
    )
    return _cut_script(topo, host, network, others, only)


def _cut_script(
    topo: Topology, me: str, network: str, peers: tuple[str, ...], only: PartitionKind
) -> str:
    iface = topo.attachment(me, network).iface
    rules_in: list[str] = []
    rules_out: list[str] = []
    for peer in peers:
        for addr in topo.attachment(peer, network).addresses:
            fam = "ip" if addr.version == 4 else "ip6"
            for match in _matches(only):
                tail = f" {match}" if match else ""
                rules_in.append(f"    iifname {iface} {fam} saddr {addr.ip}{tail} counter drop")
                rules_out.append(f"    oifname {iface} {fam} daddr {addr.ip}{tail} counter drop")
    if only in ("vrrp", "all"):
        # VRRP for an IPv6 VIP over IPv4 nodes goes to ff02::12 from link-local addresses
        # (keepalived native_ipv6): cut protocol 112 on the link, whatever the address.
        rules_in.append(f"    iifname {iface} meta l4proto 112 counter drop")
        rules_out.append(f"    oifname {iface} meta l4proto 112 counter drop")
    return "\n".join(
        [
            f"table inet {NFT_TABLE} {{",
            "  chain input {",
            "    type filter hook input priority -10; policy accept;",
            *rules_in,
            "  }",
            "  chain output {",
            "    type filter hook output priority -10; policy accept;",
            *rules_out,
            "  }",
            "}",
            "",
        ]
    )


def partition(lab: Lab, network: str, only: PartitionKind = "all") -> None:
    topo = lab.topology()
    for node, script in partition_rules(topo, network, only).items():
        run(in_ns(node, "nft", "-f", "-"), input_=script)
    _record(lab, f"partition {network} --only {only}")


def isolate(lab: Lab, host: str, only: PartitionKind = "all") -> None:
    """Cut ``host`` from its peer and the witness on the sync network (clients still reach it)."""
    topo = lab.topology()
    run(in_ns(host, "nft", "-f", "-"), input_=isolate_rules(topo, host, topo.sync_network, only))
    _record(lab, f"isolate {host} --only {only}")


def link(lab: Lab, host: str, network: str, up: bool) -> None:
    """Pull (or plug back) the host's cable on ``network``: the switch-side port goes down."""
    att = lab.topology().attachment(host, network)
    run(["ip", "-n", SWITCH_NS, "link", "set", att.switch_port, "up" if up else "down"])
    _record(lab, f"link {host} {network} {'up' if up else 'down'}")


NETEM_TABLE = "esc_lab_netem"


def loss_rules(iface: str, loss: float) -> str:
    """nft script dropping ``loss`` % of the packets leaving ``iface`` (netem's egress loss)."""
    per_10k = round(loss * 100)
    # numgen values are 0..9999: "< 10000" is out of range, so 100 % is a plain drop.
    match = "" if per_10k >= 10000 else f" numgen random mod 10000 < {per_10k}"
    return (
        f"table inet {NETEM_TABLE} {{\n"
        "  chain output {\n"
        "    type filter hook output priority -20; policy accept;\n"
        f"    oifname {iface}{match} counter drop\n"
        "  }\n"
        "}\n"
    )


def netem(lab: Lab, host: str, network: str, loss: float = 0.0, delay_ms: float = 0.0) -> str:
    """Packet loss and delay on the host's interface. Uses tc netem where the kernel has it;
    otherwise loss is done with nftables and delay is refused (it cannot be emulated)."""
    if not 0 <= loss <= 100:
        raise LabError(f"loss: {loss} is not a percentage (0-100)")
    if not 0 <= delay_ms <= 60_000:
        raise LabError(f"delay: {delay_ms} ms is out of range (0-60000)")
    att = lab.topology().attachment(host, network)
    res = run(
        in_ns(
            host,
            "tc",
            "qdisc",
            "replace",
            "dev",
            att.iface,
            "root",
            "netem",
            "loss",
            f"{loss}%",
            "delay",
            f"{delay_ms}ms",
        ),
        check=False,
    )
    if res.returncode == 0:
        how = "tc netem"
    elif "unknown" in res.stderr:
        if delay_ms > 0:
            raise LabError(
                "delay: this kernel has no netem qdisc (CONFIG_NET_SCH_NETEM) and no NFQUEUE, "
                "so delay cannot be emulated here; loss works (via nftables)"
            )
        run(in_ns(host, "nft", "delete", "table", "inet", NETEM_TABLE), check=False)
        run(in_ns(host, "nft", "-f", "-"), input_=loss_rules(att.iface, loss))
        how = "nftables"
    else:
        raise LabError(f"netem on {host}/{att.iface}: {res.stderr.strip()}")
    _record(lab, f"netem {host} {network} loss={loss}% delay={delay_ms}ms ({how})")
    return how


def diskfull(lab: Lab, host: str) -> Path:
    """Fill the node's data filesystem (its own ext4 image) to the last block."""
    data = lab.node_paths(host).data_dir
    filler = data / "DISKFULL"
    st = os.statvfs(data)
    free = st.f_bavail * st.f_frsize
    run(["fallocate", "-l", str(max(free, 4096)), str(filler)], check=False)
    # fallocate may leave a few blocks; fill the rest by appending.
    with contextlib.suppress(OSError), open(filler, "ab") as fh:
        while True:
            fh.write(b"\0" * 65536)
            fh.flush()
    _record(lab, f"diskfull {host}")
    return filler


def _succeeds(argv: list[str]) -> bool:
    return run(argv, check=False).returncode == 0


def heal(lab: Lab) -> list[str]:
    """Undo every fault: firewall, loss, cables, paused processes, full disks, a witness
    killed (quorum mode)."""
    topo = lab.topology()
    done: list[str] = []
    for att in topo.attachments:
        run(["ip", "-n", SWITCH_NS, "link", "set", att.switch_port, "up"], check=False)
        if _succeeds(in_ns(att.host, "tc", "qdisc", "del", "dev", att.iface, "root")):
            done.append(f"netem removed on {att.host}/{att.iface}")
    for host in topo.hosts:
        if _succeeds(in_ns(host, "nft", "delete", "table", "inet", NETEM_TABLE)):
            done.append(f"packet loss removed on {host}")
        if _succeeds(in_ns(host, "nft", "delete", "table", "inet", NFT_TABLE)):
            done.append(f"partition removed on {host}")
        for pid in component_pids(host, "all"):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
    for node in NODES:
        filler = lab.node_paths(node).data_dir / "DISKFULL"
        if filler.exists():
            filler.unlink()
            done.append(f"disk freed on {node}")
    if lab.quorum and not lab.booted and not component_pids(WITNESS, "witness"):
        pids = dict(lab.read_state().get("pids", {}))
        pids["witness"] = boot_witness(lab.root)  # the witness host "boots" again
        lab.write_state(pids=pids)
        done.append("witness started again")
    lab.write_state(faults=[])
    return done


def _record(lab: Lab, what: str) -> None:
    faults = list(lab.read_state().get("faults", []))
    faults.append(what)
    lab.write_state(faults=faults)


def _restore_links(lab: Lab, host: str) -> None:
    """The node's interfaces as at boot: only its own addresses (a VIP that a killed keepalived
    left configured is gone), its default routes."""
    topo = lab.topology()
    for att in topo.of_host(host):
        run(["ip", "-n", host, "addr", "flush", "dev", att.iface, "scope", "global"])
        for addr in att.addresses:
            extra = ["nodad"] if addr.version == 6 else []
            run(["ip", "-n", host, "addr", "add", str(addr), "dev", att.iface, *extra])
        run(["ip", "-n", host, "link", "set", att.iface, "up"])
    gw = topo.gateways.get(host)
    if gw is not None:
        run(["ip", "-n", host, "route", "replace", "default", "via", str(gw)])
    gw6 = topo.gateways6.get(host)
    if gw6 is not None:
        run(["ip", "-n", host, "-6", "route", "replace", "default", "via", str(gw6)])


def _node(lab: Lab, host: str, what: str, witness: bool = False) -> None:
    """``host`` is a controller node (or, with ``witness``, the witness host of quorum mode)."""
    if host == WITNESS and witness and lab.quorum:
        return
    if host not in NODES:
        raise LabError(f"{what}: {host} is not a controller node ({', '.join(NODES)})")


def reboot(lab: Lab, host: str) -> None:
    """On a booted host, a real reboot (``systemctl reboot`` inside it). On a process host, a
    power cut and a boot: every process of the node dies at once, volatile state (/run,
    addresses added at run time such as a VIP left by a killed keepalived) is gone, then the
    node boots from its persisted config."""
    _node(lab, host, "reboot")
    if lab.booted:
        lab.booted_node(host).exec(["systemctl", "reboot"], check=False, timeout=30)
        _record(lab, f"reboot {host}")
        return
    signal_component(lab, host, "all", signal.SIGKILL)
    _restore_links(lab, host)
    run_dir = lab.node_paths(host).run_dir
    run(["rm", "-rf", "--one-file-system", str(run_dir)])
    run_dir.mkdir(parents=True)
    lab.boot_node(host)


def power_cut(lab: Lab, host: str) -> None:
    """A booted host loses power: its container is killed at once and its links go dark
    (nothing answers on its addresses) until ``power_on``."""
    _node(lab, host, "power-cut", witness=True)
    if not lab.booted:
        raise LabError("power-cut: booted hosts only (`lab up --hosts booted`); see reboot")
    lab.booted_node(host).power_cut()
    for att in lab.topology().of_host(host):
        run(["ip", "-n", host, "link", "set", att.iface, "down"])
    _record(lab, f"power-cut {host}")


def power_on(lab: Lab, host: str) -> int:
    """Power a cut booted host on again: its links as at boot, then it boots from its disk.
    Returns the node's supervisor pid."""
    _node(lab, host, "power-on", witness=True)
    node = lab.booted_node(host)
    if not lab.booted or node.is_running():
        raise LabError(f"power-on: {host} is not a powered-off booted host")
    _restore_links(lab, host)
    pid = node.power_on(bind_ro=[(lab.root / "dist", DIST_IN_NODE)])
    pids = dict(lab.read_state().get("pids", {}))
    pids[f"boot-{host}"] = pid
    lab.write_state(pids=pids)
    _record(lab, f"power-on {host}")
    return pid
