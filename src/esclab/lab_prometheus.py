"""The lab's Prometheus: a real server (Debian's ``prometheus``) in ``nb``, scraping both nodes'
monitoring listeners (esc.agent.monitor_http) every second, as an operator's would.

Each node is its own scrape job: the target is the node's address on the northbound network
(what ``nb`` reaches), and ``tls_config.server_name`` the address its certificate names (its
``ha_node_list`` address), verified against the CAs the nodes hold (the pair CA, or in cinder
mode each node's own monitoring CA: one bundle). It listens on ``nb``'s loopback only
(``127.0.0.1:9090``); :func:`query` asks its HTTP API from inside ``nb``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from esc.addresses import url_host
from esc.errors import LabError
from esclab.machine import wait_until
from esclab.run import in_ns, run

LISTEN = "127.0.0.1:9090"
SCRAPE_S = 1


def render_config(targets: Mapping[str, tuple[str, str]], monitor_port: int, ca_file: Path) -> str:
    """prometheus.yml. ``targets``: node -> (address to dial, address its certificate names)."""
    jobs = []
    for node, (dial, named) in sorted(targets.items()):
        jobs.append(
            {
                "job_name": f"agent-{node}",
                "scheme": "https",
                "tls_config": {"ca_file": str(ca_file), "server_name": named},
                "static_configs": [
                    {
                        "targets": [f"{url_host(dial)}:{monitor_port}"],
                        "labels": {"node": node, "service": "esc-agent"},
                    }
                ],
            }
        )
    conf = {
        "global": {
            "scrape_interval": f"{SCRAPE_S}s",
            "scrape_timeout": f"{SCRAPE_S}s",
            "evaluation_interval": f"{SCRAPE_S}s",
        },
        "scrape_configs": jobs,
    }
    return json.dumps(conf, indent=2) + "\n"  # JSON is YAML


def start(
    directory: Path, targets: Mapping[str, tuple[str, str]], monitor_port: int, cas: Sequence[Path]
) -> int:
    """Start Prometheus in ``nb`` with its files in ``directory``; its pid once it is ready."""
    directory.mkdir(parents=True, exist_ok=True)
    bundle = directory / "ca-bundle.crt"
    bundle.write_text("".join(ca.read_text() for ca in cas))
    conf = directory / "prometheus.yml"
    conf.write_text(render_config(targets, monitor_port, bundle))
    run(["promtool", "check", "config", str(conf)])
    with open(directory / "prometheus.log", "ab") as log:
        proc = subprocess.Popen(
            in_ns(
                "nb",
                "prometheus",
                f"--config.file={conf}",
                f"--storage.tsdb.path={directory / 'data'}",
                "--storage.tsdb.retention.time=1d",
                f"--web.listen-address={LISTEN}",
                "--web.enable-lifecycle",
            ),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    if not wait_until(lambda: proc.poll() is not None or _ready(), 60):
        raise LabError(f"prometheus did not become ready (see {directory / 'prometheus.log'})")
    if proc.poll() is not None:
        raise LabError(f"prometheus exited with {proc.returncode} (see {directory}/prometheus.log)")
    return proc.pid


def _get(path: str, timeout: float = 5.0) -> tuple[int, str]:
    """GET ``path`` of Prometheus's HTTP API, from inside ``nb``: (status, body)."""
    code = (
        "import sys, urllib.request, urllib.error\n"
        "try:\n"
        f"    r = urllib.request.urlopen('http://{LISTEN}' + sys.argv[1], timeout={timeout})\n"
        "    print(r.status); print(r.read().decode())\n"
        "except urllib.error.HTTPError as e:\n"
        "    print(e.code); print(e.read().decode())\n"
        "except OSError as e:\n"
        "    print(0); print(e)\n"
    )
    res = run(in_ns("nb", sys.executable, "-c", code, path), check=False, timeout=timeout + 10)
    status, _, body = res.stdout.partition("\n")
    return (int(status) if status.strip().isdigit() else 0), body


def _ready() -> bool:
    return _get("/-/ready", timeout=2.0)[0] == 200


def query(expr: str) -> list[dict[str, Any]]:
    """An instant query's result vector (``[{"metric": {...}, "value": [t, "v"]}, ...]``)."""
    status, body = _get(f"/api/v1/query?query={quote(expr)}")
    if status != 200:
        raise LabError(f"prometheus query {expr!r}: HTTP {status}: {body[:200]}")
    data = json.loads(body)
    if data.get("status") != "success":
        raise LabError(f"prometheus query {expr!r}: {data}")
    result: list[dict[str, Any]] = data["data"]["result"]
    return result


def targets_up() -> dict[str, str]:
    """Each scrape target's health as Prometheus sees it: job -> "up" / "down" / "unknown"."""
    status, body = _get("/api/v1/targets")
    if status != 200:
        raise LabError(f"prometheus targets: HTTP {status}")
    active = json.loads(body)["data"]["activeTargets"]
    return {t["labels"]["job"]: t["health"] for t in active}


def values(expr: str, label: str = "node") -> dict[str, float]:
    """An instant query's values by one label."""
    return {r["metric"].get(label, ""): float(r["value"][1]) for r in query(expr)}


def wait_values(
    expr: str, want: Mapping[str, float], timeout: float = 60.0, label: str = "node"
) -> dict[str, float]:
    """Poll ``expr`` until its values by ``label`` are ``want``; the last values seen."""
    deadline = time.monotonic() + timeout
    seen: dict[str, float] = {}
    while time.monotonic() < deadline:
        try:
            seen = values(expr, label)
        except LabError:
            seen = {}
        if seen == dict(want):
            return seen
        time.sleep(0.5)
    raise LabError(f"prometheus: {expr} is {seen}, not {dict(want)} after {timeout:.0f}s")
