"""The random search: Hypothesis generates fault schedules; every one must keep the invariants
(invariants.py). Reproducible: a fixed seed (``SIM_SEED``, printed), no example database; for
one revision of the code only, since Hypothesis also draws from the literal constants of the
imported local modules (docs/architecture.md, "Running and replaying").

    SIM_EXAMPLES=10000  schedules in all (default)
    SIM_WORKERS=2       processes (default: up to 2, the CPUs this process may use)
    SIM_SEED=1314       the search's seed; "random" draws one (and prints it)

A failure shows the shrunk schedule, its replay line (tests/sim/test_replay.py) and its trace.
"""

from __future__ import annotations

import multiprocessing
import os
import time
import traceback
from collections import Counter

from hypothesis import given, seed, settings

from .conftest import SUMMARY
from .pair import run
from .schedule import Schedule
from .strategies import SIM_SETTINGS, schedules


def _seed() -> int:
    text = os.environ.get("SIM_SEED", "1314")
    return int.from_bytes(os.urandom(4), "big") if text == "random" else int(text)


def _search(job: tuple[int, int]) -> tuple[Counter[str], str | None]:
    """One worker: its tallies and its failure (the shrunk schedule's report), if any."""
    worker_seed, n = job
    tally: Counter[str] = Counter()

    @settings(SIM_SETTINGS, max_examples=n)
    @seed(worker_seed)
    @given(schedules)
    def check(s: Schedule) -> None:
        tally["schedules"] += 1
        r = run(s)
        tally["acks"] += len(r.acks)
        tally["allowed"] += len(r.allowed)

    failure = None
    try:
        check()
    except Exception:
        failure = traceback.format_exc(limit=-1)
    return tally, failure


def test_random_schedules() -> None:
    total = int(os.environ.get("SIM_EXAMPLES", "10000"))
    cpus = len(os.sched_getaffinity(0))
    workers = max(1, int(os.environ.get("SIM_WORKERS", str(min(2, cpus)))))
    base = _seed()
    shares = [total // workers + (1 if i < total % workers else 0) for i in range(workers)]
    jobs = [(base * 1000 + i, n) for i, n in enumerate(shares)]
    t0 = time.monotonic()
    if workers == 1:
        results = [_search(jobs[0])]
    else:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            results = pool.map(_search, jobs)
    wall = time.monotonic() - t0
    tally: Counter[str] = sum((r[0] for r in results), Counter())
    SUMMARY.append(
        f"sim: {tally['schedules']} schedules in {wall:.1f}s on {workers} worker(s), seed "
        f"{base} (SIM_SEED={base}); {tally['acks']} acknowledged writes checked, "
        f"{tally['allowed']} lost as policy 'available' allows and reports"
    )
    failures = [r[1] for r in results if r[1] is not None]
    assert not failures, f"seed {base}:\n" + failures[0]
