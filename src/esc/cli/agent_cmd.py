"""escadm commands that talk to the local agent (its unix-socket API), never to drivers.

Exit codes of ``escadm status``: 0 serving as expected for the node's role (MASTER: service
active and VIP held; BACKUP: database streaming from the primary), 1 up but not serving as
expected (SWITCHING, FAULT, degraded standby...), 3 agent not running (state file only, and
the agent's setup error when it failed to start).

``escadm reload`` on a node whose agent is not running starts it through systemd
(``systemctl enable --now esc-haagent.service``) when the host runs systemd and the node root
is ``/``; the call goes through :class:`AgentUnit`, so tests use a fake.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, Protocol

from esc.agent import setup_error
from esc.agent.api import local_request
from esc.cli.config_flags import arg_count, arg_seconds
from esc.cli.ha_set import run_config_validate
from esc.config.schema import NodePaths
from esc.drivers.proc import run
from esc.errors import CommandError, DriverError
from esc.model import DbRole, NodeState, fmt_lsn
from esc.status_view import Progress, StatusView, parse_status, status_json

EXIT_OK, EXIT_NOT_SERVING, EXIT_NO_AGENT = 0, 1, 3
AGENT_UNIT = "esc-haagent.service"
SYSTEMD_MARKER = Path("/run/systemd/system")  # exists iff systemd is PID 1 (sd_booted(3))
START_DEADLINE_S = 60.0  # reload's wait for a started agent's first answer
LOGS = {
    "agent": "esc_haagent.log",
    "manager": "escmanager.log",
    "keepalived": "keepalived.log",
    "exabgp": "exabgp.log",
    "postgres": "postgres.log",
    "etcd": "etcd.log",  # quorum mode: this host's etcd member
    "witness": "esc_witness.log",  # quorum mode, on the witness host
}


def agent_socket(paths: NodePaths) -> Path:
    return paths.run_dir / "agent.sock"


def fetch_status(paths: NodePaths) -> StatusView | None:
    """The agent's status, or None: silently when it does not answer (callers say what that
    means for them), on stderr, naming the field, when its answer is not a status."""
    try:
        code, body = local_request(agent_socket(paths), "GET", "/status", timeout=5)
    except DriverError:
        return None
    if code != 200:
        return None
    try:
        return parse_status(body)
    except DriverError as exc:
        print(f"escadm: the agent's answer is not a status: {exc}", file=sys.stderr)
        return None


def ask_agent(
    paths: NodePaths,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    timeout: float = 5.0,
) -> tuple[int, dict[str, Any]] | None:
    """One request to the local agent; None (said on stderr) when it does not answer."""
    try:
        return local_request(agent_socket(paths), method, path, body, timeout=timeout)
    except DriverError as exc:
        print(f"escadm: agent not reachable: {exc}", file=sys.stderr)
        return None


def serving_as_expected(st: StatusView) -> bool:
    if st.state is NodeState.MASTER:
        return st.service.active and st.vip_held
    if st.state is NodeState.BACKUP:
        if st.ha_mode == "cinder":
            # one database on the shared volume: a standby has nothing to stream, it must
            # just not hold the volume
            return st.role is DbRole.STANDBY
        return st.db.streaming
    return False


def progress_line(progress: Progress | None) -> str | None:
    """'cloning from esc-ha-0: 45% (120.0 of 266.7 MB)' while a clone runs, else None."""
    if progress is None:
        return None
    done, total = progress.done, progress.total
    mb = f"{done / 1e6:.1f} of {total / 1e6:.1f} MB" if total else f"{done / 1e6:.1f} MB"
    pct = f"{100 * done // total}% " if total else ""
    return f"{progress.operation}: {pct}({mb})"


def degraded_line(st: StatusView) -> str:
    """What a primary that acknowledges alone risks, live: since when, and how much WAL only
    it holds (lost to a dump if the outdated peer turns out to have been promoted meanwhile)."""
    line = "DEGRADED: acknowledged alone (peer outdated, replication asynchronous)"
    if st.degraded_since is not None:
        line += " since " + time.strftime("%H:%M:%S", time.localtime(st.degraded_since))
    count, alone = st.alone_transactions, st.alone_wal_bytes
    lacks = []
    if count is not None:
        lacks.append(f"at most {count} write transaction{'' if count == 1 else 's'}")
    if alone is not None:
        lacks.append(f"{alone} B of WAL")
    if lacks:
        line += ", " + " and ".join(lacks) + " the peer lacks"
    return line


def health_line(st: StatusView) -> str:
    db = st.db
    parts = [f"db {db.role.value} tl {db.timeline} lsn {fmt_lsn(db.lsn)}"]
    if st.state is NodeState.MASTER:
        parts.append(f"sync standby {db.sync_standby or 'none'}")
        parts.append(f"VIP {st.vip} {'held' if st.vip_held else 'NOT held'}")
    else:
        parts.append("streaming" if db.streaming else "not streaming")
    svc = st.service
    parts.append(
        "service "
        + ("active" if svc.active else "inactive")
        + ("" if svc.healthy else " UNHEALTHY")
    )
    peer = st.peer
    parts.append(f"peer {st.peer_name} " + (str(peer.state) if peer.reachable else "unreachable"))
    if st.degraded:
        parts.append(degraded_line(st))
    if st.self_outdated_from is not None:
        parts.append("OUTDATED: may not become primary")
    if st.forced:
        parts.append("FORCED primary")
    if st.paused:
        parts.append(f"PAUSED (maintenance mode, by {st.paused_by or '?'}): no automatic failover")
    if st.switchover_at is not None:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(st.switchover_at))
        parts.append(f"switchover scheduled at {when}")
    dumps = st.diverged_dumps
    if dumps:
        parts.append(f"DIVERGED WRITES PRESERVED: {len(dumps)} dump(s), latest {dumps[-1]}")
    return "; ".join(parts)


def run_status(paths: NodePaths, as_json: bool) -> int:
    st = fetch_status(paths)
    if st is None:
        try:
            state = paths.state_file.read_text().strip()
        except OSError:
            state = "STOP"
        error = setup_error.read(paths)
        if as_json:
            print(
                json.dumps(
                    {
                        "state": state,
                        "agent": "not running",
                        "error": error,
                        "role": None,
                        "peer": None,
                        "vip_held": None,
                    }
                )
            )
        else:
            print(f"{state}  (agent not running: {error or 'state file only'})")
        return EXIT_NO_AGENT
    ok = serving_as_expected(st)
    if as_json:
        print(json.dumps({**status_json(st), "serving_as_expected": ok}, indent=2))
    else:
        rule = f"  [rule {st.rule}]" if st.rule else ""
        print(f"{st.state.value}  {st.reason}{rule}")
        print(health_line(st))
        if (line := progress_line(st.progress)) is not None:
            print(line)
    return EXIT_OK if ok else EXIT_NOT_SERVING


def _lag(role: DbRole | None, receive_lsn: int, lsn: int, replay_lag_s: float) -> str:
    """A standby's replay lag: bytes received but not replayed, and seconds behind."""
    if role is not DbRole.STANDBY:
        return "-"
    return f"{max(0, receive_lsn - lsn)} B, {replay_lag_s:.1f} s"


def _side_by_side(st: StatusView) -> str:
    peer, db = st.peer, st.db
    rows = [
        ("node", st.node, st.peer_name),
        ("state", st.state.value, peer.state if peer.reachable else "unreachable"),
        ("database", db.role.value, peer.db_role),
        ("timeline", db.timeline, peer.timeline),
        ("lsn", fmt_lsn(db.lsn), fmt_lsn(peer.lsn)),
        (
            "replay lag",
            _lag(db.role, db.receive_lsn, db.lsn, db.replay_lag_s),
            _lag(peer.db_role, peer.receive_lsn, peer.lsn, peer.replay_lag_s),
        ),
        ("streaming", db.streaming, peer.streaming),
        ("serving", st.service.active, peer.serving),
        ("VIP held", st.vip_held, peer.vip_held),
    ]
    if st.anycast:
        rows.append(("announces", st.announced, peer.announced))
    width = max(len(str(r[1])) for r in rows) + 2
    lines = [f"{'':<11}{'this node':<{width}}peer"]
    lines += [f"{k:<11}{v!s:<{width}}{p}" for k, v, p in rows]
    lines.append("")
    lines.append(
        f"VIP {st.vip}   "
        + (f"anycast {st.anycast}   " if st.anycast else "")
        + f"policy {st.policy}   "
        f"degraded {st.degraded}   forced {st.forced}"
    )
    if st.degraded:
        lines.append(degraded_line(st))
    lines += quorum_lines(st)
    if st.paused:
        lines.append(f"PAUSED (maintenance mode) by {st.paused_by or '?'}: no automatic failover")
    if st.switchover_at is not None:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(st.switchover_at))
        lines.append(f"switchover scheduled at {when} by {st.switchover_at_by or '?'}")
    if st.endpoints is not None and st.endpoints.metrics is not None:
        base = st.endpoints.metrics.removesuffix("/metrics")
        lines.append(f"monitoring {base} (/primary /replica /health /readiness /metrics)")
    if (line := progress_line(st.progress)) is not None:
        lines.append(line)
    last = st.last_transition
    if last is not None:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(last.time))
        lines.append(f"last transition {when}: {last.from_state} -> {last.to_state}: {last.reason}")
    return "\n".join(lines)


def quorum_lines(st: StatusView) -> list[str]:
    """Quorum mode: etcd's members, who holds the leader key and for how long this node still
    counts on its lease, and the recorded pair (who may take over)."""
    q = st.quorum
    if q is None:
        return []
    rec = q.sync
    recorded = (
        f"primary {rec.primary or '?'}, sync standby {rec.sync or 'none (acknowledging alone)'}"
        if rec is not None
        else "none yet"
    )
    if not q.reachable:
        leader = f"etcd unreachable: {q.error}"
    elif q.holder:
        leader = f"leader key: this node, lease {q.serve_left:.1f}s left"
    else:
        leader = f"leader key: {q.leader or 'free'}"
    return [
        "quorum etcd   members " + " ".join(st.quorum_members),
        f"             {leader}",
        f"             recorded {recorded}",
    ]


def run_ha_status(paths: NodePaths, as_json: bool, watch: bool) -> int:
    while True:
        st = fetch_status(paths)
        if st is None:
            print("escadm: the agent is not running on this node", file=sys.stderr)
            return EXIT_NO_AGENT
        if as_json:
            print(json.dumps(status_json(st), indent=2))
        else:
            if watch:
                print("\033[H\033[J", end="")
            print(_side_by_side(st))
        if not watch:
            return EXIT_OK if serving_as_expected(st) else EXIT_NOT_SERVING
        time.sleep(1)


def run_history(paths: NodePaths, as_json: bool, n: int) -> int:
    answer = ask_agent(paths, "GET", "/history")
    if answer is None:
        return EXIT_NO_AGENT
    code, body = answer
    items = body.get("history", [])[-n:]
    if as_json:
        print(json.dumps(items, indent=2))
        return EXIT_OK if code == 200 else 1
    for it in items:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(it["time"]))
        print(f"{when}  {it['from']:>9} -> {it['to']:<9} {it['reason']}")
    return EXIT_OK


def run_switchover(paths: NodePaths, wait_s: float) -> int:
    answer = ask_agent(paths, "POST", "/switchover", {"who": "escadm"}, timeout=15)
    if answer is None:
        return EXIT_NO_AGENT
    code, body = answer
    print(body.get("message", body))
    if code != 200:
        return 1
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        st = fetch_status(paths)
        if st and st.state is NodeState.BACKUP and st.peer.state is NodeState.MASTER:
            print(f"switchover done: {st.peer_name} is MASTER, this node is BACKUP")
            return EXIT_OK
        time.sleep(0.1)
    print("escadm: switchover did not complete in time; see `escadm ha history`", file=sys.stderr)
    return 1


def run_pause(paths: NodePaths, paused: bool) -> int:
    """``ha pause`` / ``ha resume``: the pair's maintenance mode (both nodes learn it)."""
    answer = ask_agent(paths, "POST", "/pause" if paused else "/resume", {"who": "escadm"})
    if answer is None:
        return EXIT_NO_AGENT
    code, body = answer
    print(body.get("message", body))
    return EXIT_OK if code == 200 else 1


def run_force_primary(paths: NodePaths, yes: bool) -> int:
    if not yes:
        print(
            "Forcing this node primary lets it serve without its peer. Writes the peer "
            "acknowledged after this node last synchronised may be lost."
        )
        try:
            typed = input("Type 'yes' to force this node primary: ")
        except EOFError:
            typed = ""
        if typed.strip() != "yes":
            print("not forced")
            return 1
    answer = ask_agent(paths, "POST", "/force-primary", {"who": "escadm"}, timeout=15)
    if answer is None:
        return EXIT_NO_AGENT
    code, body = answer
    print(body.get("message", body))
    return EXIT_OK if code == 200 else 1


class AgentUnit(Protocol):
    """The agent's systemd unit, as ``escadm reload`` needs it (the seam tests replace)."""

    def available(self) -> bool:
        """systemd runs this host and manages this node's agent."""
        ...

    def active(self) -> bool: ...

    def failed(self) -> bool: ...

    def start(self) -> str | None:
        """Enable the unit (so a reboot starts it too) and start it without waiting for it;
        None, or why that failed."""
        ...


Systemctl = Callable[[list[str]], tuple[int, str]]


def _systemctl(args: list[str]) -> tuple[int, str]:
    try:
        proc = run(["systemctl", *args], check=False, timeout=30)
    except CommandError as exc:  # systemctl missing, or no answer in time
        return 1, str(exc)
    return proc.returncode, (proc.stderr or proc.stdout).strip()


class SystemdAgentUnit:
    """esc-haagent.service through systemctl. Only for the node root ``/``: the unit runs the
    agent without ``ESC_ROOT``, so it is not the agent of a lab node or of another root."""

    def __init__(
        self, root: Path, marker: Path = SYSTEMD_MARKER, systemctl: Systemctl = _systemctl
    ) -> None:
        self.root = root
        self.marker = marker
        self.systemctl = systemctl

    def available(self) -> bool:
        if self.root != Path("/") or shutil.which("systemctl") is None:
            return False
        return self.marker.is_dir()

    def active(self) -> bool:
        return self.systemctl(["is-active", "--quiet", AGENT_UNIT])[0] == 0

    def failed(self) -> bool:
        return self.systemctl(["is-failed", "--quiet", AGENT_UNIT])[0] == 0

    def start(self) -> str | None:
        # A unit that gave up (start limit hit after repeated failures) refuses to start until
        # its failure is reset.
        self.systemctl(["reset-failed", AGENT_UNIT])
        code, out = self.systemctl(["enable", "--now", "--no-block", AGENT_UNIT])
        return None if code == 0 else out or f"systemctl enable --now {AGENT_UNIT}: exit {code}"


def start_hint(paths: NodePaths) -> str:
    """How to start the agent by hand (no systemd, or another node root)."""
    env = "" if paths.root == Path("/") else f"ESC_ROOT={paths.root} "
    log = paths.log_dir / "esc_haagent.stdout"
    return f"{env}setsid esc-haagent >>{log} 2>&1 </dev/null &"


def start_agent(
    paths: NodePaths,
    unit: AgentUnit,
    deadline_s: float = START_DEADLINE_S,
    poll_s: float = 0.2,
) -> int:
    """Start the agent's unit, then wait until the agent answers with a state (it has read the
    config this reload validated), its setup fails, or the unit failed."""
    print(f"escadm: the agent is not running: starting it (systemctl enable --now {AGENT_UNIT})")
    since = time.time() - 0.1  # file times come from a coarser clock than time.time()
    why = unit.start()
    if why is not None:
        print(f"escadm: could not start {AGENT_UNIT}: {why}", file=sys.stderr)
        return EXIT_NO_AGENT
    deadline = time.monotonic() + deadline_s
    while True:
        st = fetch_status(paths)
        if st is not None:
            print(f"agent started (enabled at boot): {st.state.value}  {st.reason}")
            return EXIT_OK
        error = setup_error.read(paths, since=since)
        if error is None and unit.failed():
            error = setup_error.read(paths) or f"the unit failed; see journalctl -u {AGENT_UNIT}"
        if error is not None:
            print(f"escadm: the agent did not start: {error}", file=sys.stderr)
            return EXIT_NO_AGENT
        if time.monotonic() >= deadline:
            print(
                f"escadm: the agent did not answer within {deadline_s:.0f} s of its start; "
                f"see systemctl status {AGENT_UNIT} and escadm log agent",
                file=sys.stderr,
            )
            return EXIT_NO_AGENT
        time.sleep(poll_s)


def run_reload(
    paths: NodePaths, unit: AgentUnit | None = None, deadline_s: float = START_DEADLINE_S
) -> int:
    """Validate the config here, then ask the agent to apply it (no role change). An agent that
    is not running is started (systemd) with the config just validated."""
    if run_config_validate(paths.config_file) != 0:
        return 2
    try:
        code, body = local_request(agent_socket(paths), "POST", "/reload", {}, timeout=15)
    except DriverError as exc:
        unit = unit if unit is not None else SystemdAgentUnit(paths.root)
        if unit.available() and not unit.active():
            return start_agent(paths, unit, deadline_s)
        print(f"escadm: agent not reachable: {exc}", file=sys.stderr)
        if not unit.available():
            print(f"escadm: start the agent with: {start_hint(paths)}", file=sys.stderr)
        return EXIT_NO_AGENT
    msg = str(body.get("message", body))
    print(msg, file=sys.stdout if code == 200 else sys.stderr)
    return EXIT_OK if code == 200 else 1


def run_log(paths: NodePaths, which: str, follow: bool, n: int) -> int:
    path = paths.log_dir / LOGS[which]
    if not path.exists():
        print(f"escadm: no {which} log yet ({path})", file=sys.stderr)
        return 1
    argv = ["tail", "-n", str(n), *(["-F"] if follow else []), str(path)]
    return subprocess.call(argv)


def run_service_status(paths: NodePaths, as_json: bool) -> int:
    st = fetch_status(paths)
    if st is None:
        print("escadm: the agent is not running on this node", file=sys.stderr)
        return EXIT_NO_AGENT
    svc, state = st.service, st.state.value
    if as_json:
        print(json.dumps({**asdict(svc), "state": state}))
    else:
        print(
            f"escmanager {'active' if svc.active else 'inactive'}, "
            f"{'healthy' if svc.healthy else 'UNHEALTHY'} (node {state})"
        )
    expected = svc.active == (st.state is NodeState.MASTER) and svc.healthy
    return EXIT_OK if expected else EXIT_NOT_SERVING


def add_agent_parsers(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    ha: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    st = sub.add_parser(
        "status",
        help="this node's state and a one-line health summary",
        epilog="example: escadm status --json   (exit 0: serving as expected)",
    )
    st.add_argument("--json", action="store_true")
    hs = ha.add_parser(
        "status", help="both nodes side by side", epilog="example: escadm ha status --watch"
    )
    hs.add_argument("--json", action="store_true")
    hs.add_argument("--watch", action="store_true")
    hh = ha.add_parser("history", help="the transition log", epilog="example: escadm ha history")
    hh.add_argument("--json", action="store_true")
    hh.add_argument("-n", type=arg_count, default=50)
    so = ha.add_parser(
        "switchover",
        help="hand the primary role to the standby",
        epilog="example: escadm ha switchover   (run on the primary)",
    )
    so.add_argument("--wait", type=arg_seconds, default=30.0, help="seconds to wait for completion")
    ha.add_parser(
        "pause",
        help="maintenance mode: no automatic failover or demotion on either node",
        epilog="example: escadm ha pause   (then escadm ha resume)",
    )
    ha.add_parser(
        "resume", help="end maintenance mode on both nodes", epilog="example: escadm ha resume"
    )
    fp = ha.add_parser(
        "force-primary",
        help="let this node serve without its peer",
        epilog="example: escadm ha force-primary --yes",
    )
    fp.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    sub.add_parser(
        "reload",
        help="apply a changed config without a role change",
        epilog="example: escadm ha set ... --advert_int 0.1 && escadm reload",
    )
    lg = sub.add_parser("log", help="show a component's log", epilog="example: escadm log agent -f")
    lg.add_argument("which", nargs="?", choices=list(LOGS), default="agent")
    lg.add_argument("-f", action="store_true", dest="follow")
    lg.add_argument("-n", type=arg_count, default=50)
    sv = sub.add_parser("service", help="escmanager on this node")
    svs = sv.add_subparsers(dest="service_cmd", required=True)
    sst = svs.add_parser("status", help="active/healthy", epilog="example: escadm service status")
    sst.add_argument("--json", action="store_true")
