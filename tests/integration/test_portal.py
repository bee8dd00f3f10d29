"""The operator portal through the VIP, in headless Chromium (Debian's ``chromium``) run in the
northbound host: the page shows the pair's roles, and after the primary node is killed it shows
the standby as MASTER and the dead node as not MASTER; after the rejoin, the pair as it re-formed.
The screenshots are kept in test-artifacts/ (portal-after-failover.png, portal-after-rejoin.png).

Chromium is given the lab API user's credentials in the URL (``https://user:pass@VIP:9001/``):
headless Chromium answers the basic-auth challenge with them. When it cannot (wrong
credentials, no answer), ``--dump-dom`` prints nothing, which reads here as "no roles shown".
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import quote

import pytest
from labutil import ARTIFACTS, eventually, wait_pair

from esc.config.schema import ManagerConfig
from esclab.lab import LAB_VIP, Lab
from esclab.scenarios import SCENARIOS, restore

pytestmark = pytest.mark.integration
VIP = LAB_VIP["single"]
PORTAL_PORT = ManagerConfig().portal_port  # the lab keeps the default


@dataclass
class _States(HTMLParser):
    """From a dumped DOM: {node: text} of every ``<td data-node=… data-field="state">``."""

    states: dict[str, str] = field(default_factory=dict)
    _node: str | None = None

    def __post_init__(self) -> None:
        super().__init__()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "td" and a.get("data-field") == "state" and a.get("data-node"):
            self._node = a["data-node"]
            self.states[self._node] = ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "td":
            self._node = None

    def handle_data(self, data: str) -> None:
        if self._node is not None:
            self.states[self._node] += data


def shown_states(dom: str) -> dict[str, str]:
    p = _States()
    p.feed(dom)
    p.close()
    return {k: v.strip() for k, v in p.states.items()}


def refreshes(dom: str) -> int:
    """How many times the page's script re-fetched status.json (``<body data-refreshes>``)."""
    m = re.search(r'<body[^>]*\bdata-refreshes="(\d+)"', dom)
    return int(m.group(1)) if m else 0


def portal_url(lab: Lab) -> str:
    api = lab.status()["api"]
    user, password = quote(api["user"], safe=""), quote(api["password"], safe="")
    return f"https://{user}:{password}@{VIP}:{PORTAL_PORT}/"


def chromium(lab: Lab, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Headless Chromium in ``nb``; 5 s of virtual time lets the page refresh itself twice."""
    if shutil.which("chromium") is None:
        pytest.fail("chromium is not installed (scripts/bootstrap installs it)")
    with tempfile.TemporaryDirectory(prefix="esc-chromium-") as profile:
        argv, env = lab.exec_argv(
            "nb",
            [
                "chromium",
                "--headless",
                "--no-sandbox",
                "--ignore-certificate-errors",  # each node's self-signed certificate
                "--disable-gpu",
                "--hide-scrollbars",
                f"--user-data-dir={profile}",  # never another run's profile lock
                "--virtual-time-budget=5000",
                *args,
                url,
            ],
        )
        return subprocess.run(
            argv, env=env, capture_output=True, text=True, timeout=90, check=False
        )


@dataclass
class Seen:
    states: dict[str, str] = field(default_factory=dict)
    dom: str = ""
    stderr: str = ""


def wait_shown(
    lab: Lab, url: str, ok: Callable[[dict[str, str]], bool], what: str, timeout: float = 90.0
) -> Seen:
    """Dump the portal until ``ok(states)`` holds; fail showing what it last showed."""
    seen = Seen()

    def look() -> bool:
        res = chromium(lab, url, "--dump-dom")
        seen.states, seen.dom, seen.stderr = shown_states(res.stdout), res.stdout, res.stderr
        return ok(seen.states)

    try:
        eventually(look, timeout, 1.0, what=what)
    except AssertionError as exc:
        noise = ("dbus", "unexpected operator")  # harmless in a namespace without a bus
        lines = [ln for ln in seen.stderr.splitlines() if not any(n in ln for n in noise)]
        tail = "\n".join(lines[-5:])
        raise AssertionError(
            f"{exc}; portal last showed {seen.states} (chromium: {tail})"
        ) from None
    return seen


def screenshot(lab: Lab, url: str, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    path.unlink(missing_ok=True)
    res = chromium(lab, url, f"--screenshot={path}", "--window-size=1280,900")
    assert path.exists() and path.stat().st_size > 0, res.stderr[-2000:]
    return path


def test_portal_shows_the_roles_change_after_failover(healthy: tuple[str, str], pair: Lab) -> None:
    master, backup = healthy
    url = portal_url(pair)

    before = wait_shown(
        pair,
        url,
        lambda s: s == {master: "MASTER", backup: "BACKUP"},
        f"the portal to show {master} MASTER and {backup} BACKUP",
    )
    assert refreshes(before.dom) >= 1, "the page did not refresh itself (status.json)"

    SCENARIOS["kill-node"](pair, master)
    eventually(lambda: pair.master() == backup, 60, 0.1, what=f"{backup} to become primary")

    after = wait_shown(
        pair,
        url,
        lambda s: s.get(backup) == "MASTER" and s.get(master) not in (None, "MASTER"),
        f"the portal to show {backup} MASTER and {master} no longer MASTER",
    )
    assert after.states[master] == "UNREACHABLE", after.states  # its whole node is dead
    screenshot(pair, url, "portal-after-failover.png")

    # the killed node boots again and rejoins; the portal follows whatever pair re-formed
    restore(pair, master)
    new_master, new_backup = wait_pair(pair, 180)
    wait_shown(
        pair,
        url,
        lambda s: s == {new_master: "MASTER", new_backup: "BACKUP"},
        f"the portal to show {new_master} MASTER and {new_backup} BACKUP after the rejoin",
    )
    screenshot(pair, url, "portal-after-rejoin.png")
