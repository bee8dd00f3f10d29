"""``ha.routes`` (``escadm ha set --route DEST/LEN:GW:IFACE``) applied on the node.

Routes the agent installs carry their own routing protocol number (:data:`PROTO`), so the
agent finds exactly its own routes again: on start and on ``escadm reload`` it adds or replaces
every configured route and deletes those of its routes that left the config, and touches no
other route of the host. The plan is a pure function; :func:`apply_routes` runs it.
"""

from __future__ import annotations

import ipaddress
import json
import logging
from dataclasses import dataclass

from esc.config.schema import Route
from esc.drivers.proc import run
from esc.errors import CommandError

log = logging.getLogger(__name__)

PROTO = "222"  # "ip route ... proto 222": ours (rt_protos has no name for it)


@dataclass(frozen=True)
class Present:
    """A route of ours the kernel has."""

    dest: str
    gateway: str | None
    iface: str | None


def parse_ip_route_json(text: str) -> list[Present]:
    """``ip -j route show proto 222`` (or ``-6``) output -> our routes."""
    out = []
    for r in json.loads(text or "[]"):
        dest = r.get("dst", "")
        if dest == "default":
            continue
        if "/" not in dest:
            addr = ipaddress.ip_address(dest)
            dest = f"{addr}/{addr.max_prefixlen}"
        out.append(Present(str(ipaddress.ip_network(dest)), r.get("gateway"), r.get("dev")))
    return out


def plan(desired: tuple[Route, ...], present: list[Present]) -> list[list[str]]:
    """The ``ip`` commands that make our routes exactly ``desired`` (replace is idempotent)."""
    cmds: list[list[str]] = []
    wanted = {r.dest for r in desired}
    for p in present:
        if p.dest not in wanted:
            cmds.append(["ip", "route", "del", p.dest, "proto", PROTO])
    for r in desired:
        via = ["via", str(r.gateway), "dev", r.iface]
        cmds.append(["ip", "route", "replace", r.dest, *via, "proto", PROTO])
    return cmds


def apply_routes(desired: tuple[Route, ...]) -> list[str]:
    """Apply ``desired``; returns one line per change for the log (errors are logged and the
    other routes still applied: a bad route must not stop the agent)."""
    present: list[Present] = []
    for fam in ("-4", "-6"):
        present += parse_ip_route_json(
            run(["ip", fam, "-j", "route", "show", "proto", PROTO]).stdout
        )
    done = []
    for argv in plan(desired, present):
        try:
            run(argv)
        except CommandError as exc:
            log.error("route not applied: %s", exc)
            continue
        done.append(" ".join(argv[2:-2]))
    return done
