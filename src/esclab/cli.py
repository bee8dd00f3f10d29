"""``escadm lab ...``: the test bed of namespace hosts."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from typing import Any

from esc.cli.config_flags import arg_count
from esc.errors import EscError, LabError
from esclab import faults
from esclab.lab import Lab
from esclab.topology import NODES

EXAMPLES = """examples:
  escadm lab up                       # single network, everything on 192.0.2.0/24
  escadm lab up --topology multi      # northbound / sync / mgmt networks
  escadm lab status --json
  escadm lab exec esc-ha-0 -- escadm status
  escadm lab fault kill esc-ha-0 all
  escadm lab fault partition sync --only vrrp
  escadm lab fault heal
  escadm lab down
"""


def add_lab_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    lab = sub.add_parser(
        "lab",
        help="the lab: HA pair in network namespaces",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ls = lab.add_subparsers(dest="lab_cmd", required=True, metavar="COMMAND")
    up = ls.add_parser(
        "up",
        help="create the lab hosts and start the pair",
        epilog="example: escadm lab up --topology multi",
    )
    up.add_argument("--topology", choices=["single", "multi"], default="single")
    up.add_argument(
        "--ha_mode",
        choices=["drbd", "cinder", "drbd_on_cinder"],
        default="drbd",
        help="storage mode: drbd (replicated local disks, default), cinder (one shared volume), "
        "drbd_on_cinder (replicated, each node on its own volume)",
    )
    up.add_argument(
        "--heartbeat",
        type=arg_count,
        choices=[4, 6],
        default=4,
        help="address family of ha_node_list (VRRP, replication, peer API); 6 also makes the "
        "VIP IPv6",
    )
    up.add_argument(
        "--hosts",
        choices=["process", "booted"],
        default="process",
        help="what the two controller nodes are: processes in namespaces (default), or booted "
        "Debian 12 hosts (systemd-nspawn) with the .deb installed and the guide's commands",
    )
    up.add_argument(
        "--quorum",
        choices=["none", "etcd"],
        default="none",
        help="etcd: quorum mode, an etcd member on each node and on the witness host",
    )
    ls.add_parser("down", help="remove everything the lab made")
    st = ls.add_parser("status", help="hosts, addresses and HA state")
    st.add_argument("--json", action="store_true")
    ex = ls.add_parser(
        "exec",
        help="run a command inside a host",
        epilog="example: escadm lab exec nb -- ping -c1 192.0.2.10",
    )
    ex.add_argument("host")
    ex.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- CMD ...")

    fault = ls.add_parser(
        "fault",
        help="inject a fault, or heal all",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    fs = fault.add_subparsers(dest="fault_cmd", required=True, metavar="FAULT")
    for name, helptext in (("kill", "SIGKILL"), ("pause", "SIGSTOP"), ("resume", "SIGCONT")):
        p = fs.add_parser(name, help=f"{helptext} a component of a host (or all of it)")
        p.add_argument("host")
        p.add_argument("component", help=f"{', '.join(faults.COMPONENTS)} or all")
    ln = fs.add_parser("link", help="pull or plug a host's cable on a network")
    ln.add_argument("host")
    ln.add_argument("net")
    ln.add_argument("updown", choices=["up", "down"])
    pa = fs.add_parser("partition", help="cut traffic between the two nodes on a network")
    pa.add_argument("net")
    pa.add_argument("--only", choices=["vrrp", "db", "api", "etcd", "all"], default="all")
    iso = fs.add_parser(
        "isolate", help="cut a node from its peer and the witness on the sync network"
    )
    iso.add_argument("host")
    iso.add_argument("--only", choices=["vrrp", "db", "api", "etcd", "all"], default="all")
    ne = fs.add_parser("netem", help="packet loss and delay: netem HOST NET loss=1 delay=20")
    ne.add_argument("host")
    ne.add_argument("net")
    ne.add_argument("params", nargs="*", metavar="loss=%|delay=ms")
    df = fs.add_parser("diskfull", help="fill the node's data filesystem")
    df.add_argument("host")
    rb = fs.add_parser(
        "reboot", help="reboot a node (booted hosts: systemctl reboot; else power-cut and boot)"
    )
    rb.add_argument("host")
    pc = fs.add_parser("power-cut", help="booted hosts: kill the node's container, links down")
    pc.add_argument("host")
    po = fs.add_parser("power-on", help="booted hosts: boot a node cut by power-cut again")
    po.add_argument("host")
    fs.add_parser("heal", help="undo every fault")


def _netem_params(params: list[str]) -> tuple[float, float]:
    values = {"loss": 0.0, "delay": 0.0}
    for p in params:
        key, _, val = p.partition("=")
        if key not in values:
            raise LabError(f"netem: unknown parameter {key!r} (loss=%, delay=ms)")
        try:
            values[key] = float(val.rstrip("%").removesuffix("ms"))
        except ValueError:
            raise LabError(f"netem: {key}: {val!r} is not a number") from None
    return values["loss"], values["delay"]


def run_lab(args: argparse.Namespace) -> int:
    lab = Lab()
    try:
        return _dispatch(lab, args)
    except EscError as exc:
        print(f"escadm lab: {exc}", file=sys.stderr)
        return 1


def _dispatch(lab: Lab, args: argparse.Namespace) -> int:
    cmd = args.lab_cmd
    if cmd == "up":
        res = lab.up(
            args.topology,
            ha_mode=args.ha_mode,
            heartbeat=args.heartbeat,
            hosts=args.hosts,
            quorum=args.quorum,
        )
        if not res.created:
            print(
                f"lab already running at {lab.root} (topology {lab.read_state().get('topology')})"
            )
        else:
            if res.cleaned_stale:
                print("removed a stale lab left behind by an earlier run")
            print(f"lab up at {lab.root} (topology {args.topology})")
        return 0
    if cmd == "down":
        removed = lab.down()
        print("lab down: " + ("; ".join(removed) if removed else "nothing to remove"))
        return 0
    if cmd == "status":
        st = lab.status()
        if args.json:
            print(json.dumps(st, indent=2, sort_keys=True))
        else:
            print(render_status(st))
        return 0 if st.get("up") else 3
    if cmd == "exec":
        argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
        if not argv:
            raise LabError("exec: no command given (escadm lab exec HOST -- CMD ...)")
        full, env = lab.exec_argv(args.host, argv)
        sys.stdout.flush()
        os.execvpe(full[0], full, env)
    if cmd == "fault":
        return _fault(lab, args)
    raise LabError(f"unknown lab command {cmd}")


def _fault(lab: Lab, args: argparse.Namespace) -> int:
    f = args.fault_cmd
    if f in ("kill", "pause", "resume"):
        sig = {"kill": signal.SIGKILL, "pause": signal.SIGSTOP, "resume": signal.SIGCONT}[f]
        pids = faults.signal_component(lab, args.host, args.component, sig)
        print(f"{sig.name} sent to {len(pids)} process(es) of {args.component} on {args.host}")
    elif f == "link":
        faults.link(lab, args.host, args.net, args.updown == "up")
        print(f"{args.host} {args.net} link {args.updown}")
    elif f == "partition":
        faults.partition(lab, args.net, args.only)
        print(f"partitioned {args.net} between the nodes ({args.only})")
    elif f == "isolate":
        if args.host not in NODES:
            raise LabError(f"isolate: {args.host} is not a node ({', '.join(NODES)})")
        faults.isolate(lab, args.host, args.only)
        print(f"isolated {args.host} from its peer and the witness ({args.only})")
    elif f == "netem":
        loss, delay = _netem_params(args.params)
        how = faults.netem(lab, args.host, args.net, loss, delay)
        print(f"netem on {args.host}/{args.net}: loss {loss}% delay {delay} ms ({how})")
    elif f == "diskfull":
        filler = faults.diskfull(lab, args.host)
        print(f"filled {filler.parent} on {args.host}")
    elif f == "reboot":
        faults.reboot(lab, args.host)
        print(f"{args.host} rebooted")
    elif f == "power-cut":
        faults.power_cut(lab, args.host)
        print(f"{args.host} powered off")
    elif f == "power-on":
        faults.power_on(lab, args.host)
        print(f"{args.host} powering on")
    elif f == "heal":
        done = faults.heal(lab)
        print("healed: " + ("; ".join(done) if done else "no fault was in force"))
    return 0


def render_status(st: dict[str, Any]) -> str:
    if not st.get("up"):
        if st.get("stale"):
            return f"lab at {st.get('root')} is stale (no live processes): run `escadm lab down`"
        return "no lab is up"
    lines = [f"lab at {st['root']}  topology {st['topology']}", ""]
    lines.append(f"{'HOST':<10} {'IFACE':<6} ADDRESSES")
    for host, info in st["hosts"].items():
        first = True
        for iface, addrs in info["interfaces"].items():
            lines.append(f"{host if first else '':<10} {iface:<6} {', '.join(addrs)}")
            first = False
        for key in ("state", "vip"):
            if key in info:
                lines.append(f"{'':<10} {key:<6} {info[key]}")
    if st.get("vip"):
        lines += ["", f"VIP {st['vip']}   pair ready: {st.get('pair_ready')}"]
    api = st.get("api") or {}
    if api.get("url"):
        also = f"  (and {api['https_url']})" if api.get("https_url") != api["url"] else ""
        lines.append(
            f"API {api['url']}{also}  user {api.get('user')} password {api.get('password')}"
        )
    if st.get("faults"):
        lines += ["", "faults in force: " + "; ".join(st["faults"])]
    return "\n".join(lines)
