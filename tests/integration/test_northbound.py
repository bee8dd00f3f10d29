"""The northbound API through the VIP of the lab pair, with the lab VIM: deployments make real
VMs (network namespaces on the VNF network) that the primary can ping; callbacks reach the
orchestrator in ``nb``; a failover in the middle of a deployment finishes it without creating
any VM twice. Outcomes only."""

from __future__ import annotations

import json
import os
import pwd
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from labutil import deployment_body, eventually, in_host, wait_pair

from esc.accounts import MANAGER_USER
from esc.agent.local_api import local_request
from esc.config.load import load_config
from esclab import faults, scenarios
from esclab.lab import LAB_VIP, Lab
from esclab.vim import list_vms

pytestmark = pytest.mark.integration
VIP = LAB_VIP["single"]
NB_ADDR = "192.0.2.50"  # the nb host on the single topology
RECEIVER = """
import http.server, json, sys
out = open(sys.argv[1], "a", buffering=1)
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        rec = {"headers": dict(self.headers), "body": json.loads(body or b"null")}
        out.write(json.dumps(rec) + "\\n")
        self.send_response(200); self.end_headers()
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("0.0.0.0", int(sys.argv[2])), H).serve_forever()
"""


TCP_PROBE = (
    "import socket, sys\n"
    "s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)\n"
    "print(s.recv(200).decode())\n"
)


class Api:
    """curl from the nb host through the VIP, as the orchestrator would."""

    def __init__(self, lab: Lab) -> None:
        api = lab.status()["api"]
        self.base = api["https_url"].removesuffix("/v0")
        self.auth = f"{api['user']}:{api['password']}"

    def call(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], Any]:
        argv = ["curl", "-sk", "-m", "10", "-D", "-", "-u", self.auth, "-X", method]
        for k, v in (headers or {}).items():
            argv += ["-H", f"{k}: {v}"]
        if body is not None:
            argv += ["-H", "Content-Type: application/json", "--data", json.dumps(body)]
        res = in_host("nb", *argv, f"{self.base}{path}", timeout=30)
        head, _, text = res.stdout.replace("\r\n", "\n").partition("\n\n")
        while head.startswith("HTTP/") and " 100 " in head.split("\n", 1)[0]:
            head, _, text = text.partition("\n\n")
        lines = head.split("\n")
        if not lines or not lines[0].startswith("HTTP/"):
            return 0, {}, res.stdout + res.stderr
        code = int(lines[0].split()[1])
        hdrs = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
        try:
            return code, hdrs, json.loads(text) if text.strip() else None
        except ValueError:
            return code, hdrs, text


@pytest.fixture
def receiver(pair: Lab, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    out = tmp_path / "callbacks.jsonl"
    out.touch()
    port = 9900
    proc = subprocess.Popen(
        ["ip", "netns", "exec", "nb", sys.executable, "-c", RECEIVER, str(out), str(port)],
        start_new_session=True,
    )
    try:
        eventually(
            lambda: in_host("nb", "ss", "-ltn", f"sport = :{port}").stdout.count(f":{port}"),
            20,
            what="callback receiver listening",
        )
        yield f"http://{NB_ADDR}:{port}/cb", out
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def calls(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def body(tenant: str, name: str, count: int) -> dict[str, Any]:
    return deployment_body(tenant, name, count, networks=("vnf",))


def responders(vm_id: str) -> list[int]:
    """Live responder processes of one VM (exactly one, or the VM was created twice)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"--vm={vm_id}".encode() in cmd:
            pids.append(int(proc.name))
    return pids


def finished(api: Api, txid: str) -> dict[str, Any] | None:
    code, _, tx = api.call("GET", f"/v0/transactions/{txid}")
    return tx if code == 200 and tx["state"] in ("SUCCESS", "FAILED") else None


def test_deployment_makes_vms_the_primary_reaches(
    healthy: tuple[str, str], pair: Lab, receiver: tuple[str, Path]
) -> None:
    master, _ = healthy
    api = Api(pair)
    url, out = receiver
    assert api.call("POST", "/v0/tenants", {"name": "nbt"})[0] == 202
    code, hdrs, tx = api.call("POST", "/v0/deployments", body("nbt", "web", 2), {"Callback": url})
    assert code == 202, tx
    txid = hdrs["esc-transaction-id"]
    assert tx["id"] == txid
    done = eventually(lambda: finished(api, txid), 60, what="deployment finished")
    assert done["state"] == "SUCCESS", done
    vms = [v for v in list_vms(pair.root / "vim") if v.deployment_id == tx["resource_id"]]
    assert len(vms) == 2
    for vm in vms:
        addr = str(vm.address.ip)
        eventually(lambda a=addr: in_host(master, "ping", "-c1", "-W1", a).returncode == 0, 20)
        answer = in_host(master, sys.executable, "-c", TCP_PROBE, addr, str(vm.port))
        assert vm.name in answer.stdout, answer
    cb = eventually(lambda: calls(out), 30, what="callback")
    h = {k.lower(): v for k, v in cb[0]["headers"].items()}
    assert h["esc-transaction-id"] == txid
    assert h["esc-status-code"] == "200"
    assert cb[0]["body"]["state"] == "DEPLOYED"
    # Deleting the deployment removes its VMs.
    code, hdrs, _ = api.call("DELETE", f"/v0/deployments/{tx['resource_id']}")
    assert code == 202
    eventually(lambda: finished(api, hdrs["esc-transaction-id"]), 60, what="delete finished")
    assert not [v for v in list_vms(pair.root / "vim") if v.deployment_id == tx["resource_id"]]


def test_failover_mid_deployment_completes_it_once(
    healthy: tuple[str, str], pair: Lab, receiver: tuple[str, Path]
) -> None:
    master, backup = healthy
    api = Api(pair)
    url, out = receiver
    api.call("POST", "/v0/tenants", {"name": "nbf"})
    txid = f"nb-fo-{int(time.time())}"
    count = 8
    code, _, tx = api.call(
        "POST",
        "/v0/deployments",
        body("nbf", "big", count),
        {"Callback": url, "ESC-Transaction-Id": txid},
    )
    assert code == 202, tx
    dep = tx["resource_id"]
    vim = pair.root / "vim"
    eventually(
        lambda: 2 <= len([v for v in list_vms(vim) if v.deployment_id == dep]) < count,
        60,
        what="a deployment half done",
    )
    scenarios.SCENARIOS["kill-node"](pair, master)
    eventually(lambda: pair.master() == backup, 60, what=f"{backup} MASTER")
    # The orchestrator retries with the same id: answered with the original transaction.
    retry = eventually(
        lambda: (
            (
                r := api.call(
                    "POST",
                    "/v0/deployments",
                    body("nbf", "big", count),
                    {"Callback": url, "ESC-Transaction-Id": txid},
                )
            )[0]
            == 202
            and r
        ),
        60,
        what="retry answered",
    )
    assert retry[2]["resource_id"] == dep
    done = eventually(lambda: finished(api, txid), 120, what="deployment finished")
    assert done["state"] == "SUCCESS", done
    vms = [v for v in list_vms(vim) if v.deployment_id == dep]
    assert sorted(v.name for v in vms) == sorted({v.name for v in vms}) and len(vms) == count
    for vm in vms:
        assert len(responders(vm.vm_id)) == 1, vm  # no VM created twice
    cbs = eventually(lambda: [c for c in calls(out) if c["body"].get("id") == dep], 60)
    ids = {{k.lower(): v for k, v in c["headers"].items()}["esc-transaction-id"] for c in cbs}
    assert ids == {txid}
    scenarios.restore(pair, master)
    wait_pair(pair)


def _ids(pid: int) -> tuple[int, int, str]:
    """(real uid, real gid, supplementary groups) of a process."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return int(fields["Uid"].split()[0]), int(fields["Gid"].split()[0]), fields["Groups"].strip()


def test_the_manager_runs_unprivileged_without_the_pairs_secrets(
    healthy: tuple[str, str], pair: Lab
) -> None:
    master, _ = healthy
    pw = pwd.getpwnam(MANAGER_USER)
    pids = faults.component_pids(master, "manager")
    assert pids, "no esc-manager on the primary"
    for pid in pids:
        uid, gid, groups = _ids(pid)
        assert (uid, gid, groups) == (pw.pw_uid, pw.pw_gid, ""), pid
    paths = pair.node_paths(master)
    # its database role owns the application's database and is no superuser
    role = pair.psql(
        master, "SELECT rolsuper, pg_get_userbyid(datdba) FROM pg_roles, pg_database "
        f"WHERE rolname = '{MANAGER_USER}' AND datname = 'esc'",
    )  # fmt: skip
    assert role.stdout.strip() == f"f|{MANAGER_USER}", role
    served = pair.psql(master, "SELECT DISTINCT usename FROM pg_stat_activity WHERE datname='esc'")
    assert MANAGER_USER in served.stdout.split(), served
    # its copy of the config has none of the pair's secrets; the original it cannot read
    cfg = load_config(paths.config_file)
    secret, password = cfg.agent.peer_secret, cfg.replication.password
    assert secret and password
    copy = (paths.manager_run_dir / "esc.toml").read_text()
    assert secret not in copy and password not in copy
    # and no process on the machine shows either in its command line (ps)
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        assert secret not in argv and password not in argv, proc.name
    as_manager = ["setpriv", "--reuid", str(pw.pw_uid), "--regid", str(pw.pw_gid), "--clear-groups"]
    read = subprocess.run(
        [*as_manager, "cat", str(paths.config_file)], check=False, capture_output=True
    )
    assert read.returncode != 0 and b"Permission denied" in read.stderr
    # nor can it ask PostgreSQL for the superuser
    su = subprocess.run(
        [*as_manager, "psql", "-h", str(paths.pg_socket_dir), "-U", "postgres", "-d", "esc",
         "-XAtc", "SELECT 1"],
        check=False, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert su.returncode != 0 and "authentication failed" in su.stderr, su
    # the portal's socket into the agent reads, and refuses the rest before the agent sees it
    sock = paths.agent_status_socket
    assert local_request(sock, "GET", "/status")[0] == 200
    code, body = local_request(sock, "POST", "/switchover", {})
    assert code == 403 and "only reads" in body["error"]
    assert pair.master() == master
