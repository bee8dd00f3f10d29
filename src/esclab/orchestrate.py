"""Drive the lab's northbound writer (esclab.writer) from outside, and check its result.

Used by the fault tests and the benchmarks: start a writer in ``nb``, inject a fault, stop the
writer, then check on the surviving primary that every acknowledged write exists (none lost)
and that no retry executed twice.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from esc.errors import LabError
from esclab.lab import Lab
from esclab.run import in_ns
from esclab.topology import NODES


@dataclass
class Ack:
    n: int
    t_ack: float
    attempts: int
    via: int = 0  # index in WriterRun.urls of the URL that acknowledged
    t_sent: float = 0.0  # when the acknowledged attempt was sent (its commit is in between)


@dataclass
class WriterRun:
    lab: Lab
    prefix: str
    interval: float = 0.02
    # A request in flight to a node that dies unanswered (link down, paused) is only given up
    # after this; it bounds the measured gap from below, so keep it short (retries are safe:
    # same transaction id).
    request_timeout: float = 0.3
    url: str | None = None  # the northbound base URL; default: the VIP's (lab status api.url)
    # Instead of one URL: several, tried in turn (a client that reaches each node by its own
    # address, esclab.writer); Ack.via says which one acknowledged.
    urls: tuple[str, ...] = ()
    acks: list[Ack] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    proc: subprocess.Popen[str] | None = None
    _reader: threading.Thread | None = None
    _ready: threading.Event = field(default_factory=threading.Event)

    def start(self, timeout: float = 30.0) -> WriterRun:
        st = self.lab.status()
        api = st.get("api") or {}
        if not api.get("password"):
            raise LabError("the lab has no API user (is the pair up?)")
        urls = self.urls or (self.url or api["url"],)
        argv = in_ns(
            "nb",
            sys.executable,
            "-m",
            "esclab.writer",
            *(arg for url in urls for arg in ("--url", url)),
            "--user",
            api["user"],
            "--password-stdin",
            "--prefix",
            self.prefix,
            "--interval",
            str(self.interval),
            "--timeout",
            str(self.request_timeout),
        )
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=dict(os.environ),
        )
        assert self.proc.stdin is not None
        self.proc.stdin.write(api["password"] + "\n")
        self.proc.stdin.close()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self._ready.wait(timeout):
            self.stop()
            raise LabError("the writer did not start")
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                item = json.loads(line)
            except ValueError:
                continue
            if item.get("ready"):
                self._ready.set()
            elif "summary" in item:
                self.summary = item["summary"]
            elif "n" in item:
                self.acks.append(
                    Ack(
                        item["n"],
                        item["t_ack"],
                        item["attempts"],
                        int(item.get("via", 0)),
                        float(item.get("t_sent", item["t_ack"])),
                    )
                )

    def wait_acks(self, count: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.acks) < count:
            if time.monotonic() > deadline:
                raise LabError(f"only {len(self.acks)} of {count} writes acknowledged in time")
            time.sleep(0.05)

    def stop(self) -> dict[str, Any]:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._reader is not None:
            self._reader.join(10)
        return self.summary

    def gap_around(self, t_fault: float, until: float | None = None) -> float:
        """The write gap a fault caused: the longest stretch without an acknowledgement from
        the last one before the fault to the first one after ``until`` (default: the last ack).
        A fault's effect can lag its injection, so the first ack after it is not enough."""
        times = sorted(a.t_ack for a in self.acks)
        before = [t for t in times if t <= t_fault]
        after = [t for t in times if t > t_fault and (until is None or t <= until)]
        if not after:
            raise LabError("no write was acknowledged after the fault")
        window = [before[-1] if before else t_fault, *after]
        return max(b - a for a, b in itertools.pairwise(window))


def present_ids(lab: Lab, prefix: str) -> set[int]:
    """Tenant numbers present on the current primary for this writer's prefix."""
    master = lab.master()
    if master is None:
        raise LabError("no MASTER to check the data on")
    sql = f"SELECT name FROM tenants WHERE name LIKE '{prefix}-%'"
    out = lab.psql(master, sql, timeout=60, check=True).stdout
    return {int(line.rsplit("-", 1)[1]) for line in out.split()}


def check(lab: Lab, w: WriterRun) -> dict[str, int]:
    """acked, lost (acknowledged but missing), duplicated (a retry executed twice)."""
    present = present_ids(lab, w.prefix)
    acked = {a.n for a in w.acks}
    return {
        "acked": len(acked),
        "lost": len(acked - present),
        "duplicated": int(w.summary.get("duplicates", 0)),
    }


def other(host: str) -> str:
    return NODES[1 - NODES.index(host)]


def both_accepting(a: list[Ack], b: list[Ack]) -> list[tuple[Ack, Ack]]:
    """Pairs of writes, one acknowledged by each of two writers each pinned to one node, whose
    commits may have happened at the same time: their [sent, acknowledged] intervals overlap.
    Empty when the two nodes never accepted writes at once (quorum mode's promise)."""
    events = sorted(
        [(x.t_sent, x.t_ack, 0, x) for x in a] + [(y.t_sent, y.t_ack, 1, y) for y in b],
        key=lambda e: e[0],
    )
    found: list[tuple[Ack, Ack]] = []
    latest: list[Ack | None] = [None, None]  # per side, the interval reaching furthest so far
    for sent, _ack, side, x in events:
        other = latest[1 - side]
        if other is not None and other.t_ack > sent:
            found.append((x, other) if side == 0 else (other, x))
        mine = latest[side]
        if mine is None or x.t_ack > mine.t_ack:
            latest[side] = x
    return found
