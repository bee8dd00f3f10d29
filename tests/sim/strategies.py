"""Hypothesis strategies for fault schedules (schedule.py), and the search's settings."""

from __future__ import annotations

from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st

from .schedule import Fault, Schedule, Step

COMPONENTS = ("agent", "keepalived", "postgres", "manager")
NODES = (-1, 0, 1)  # -1: whichever node is MASTER when the fault starts

settings.register_profile(
    "sim-ci",
    deadline=None,
    database=None,  # no example database: a run depends on its seed (and the code's constants)
    derandomize=False,  # the seed is explicit (@seed in test_search.py), and printed
    print_blob=False,
    suppress_health_check=list(HealthCheck),
    phases=(Phase.explicit, Phase.generate, Phase.shrink),
)
SIM_SETTINGS = settings.get_profile("sim-ci")


def tenths(lo: int, hi: int) -> st.SearchStrategy[float]:
    return st.integers(lo, hi).map(lambda n: n / 10)


# Short faults, faults past the standby-loss grace (5 s), and past wal_sender_timeout + grace
# (10 s: where a primary drops its lost standby and acknowledges alone).
durations = st.one_of(tenths(1, 20), tenths(20, 70), tenths(95, 130))
node = st.sampled_from(NODES)

partitions = st.builds(
    Fault,
    kind=st.just("partition"),
    what=st.sampled_from(("all", "vrrp", "repl", "api", "vrrp,api", "vrrp,repl", "repl,api")),
    direction=st.sampled_from(("both", "both", "a>b", "b>a")),
    duration=durations,
)
kills = st.builds(
    Fault,
    kind=st.just("kill"),
    node=node,
    what=st.sampled_from(COMPONENTS),
    duration=tenths(5, 100),
)
pauses = st.builds(
    Fault,
    kind=st.just("pause"),
    node=node,
    what=st.sampled_from((*COMPONENTS, "node")),
    duration=durations,
)
reboots = st.builds(Fault, kind=st.just("reboot"), node=node, duration=tenths(10, 150))
switchovers = st.builds(Fault, kind=st.just("switchover"), node=st.sampled_from((-1, -1, 0, 1)))
faults = st.one_of(partitions, partitions, kills, pauses, reboots, switchovers)
steps = st.builds(Step, gap=st.one_of(st.just(0.0), tenths(1, 40)), fault=faults)

schedules = st.builds(
    Schedule,
    seed=st.integers(0, 2**31 - 1),
    steps=st.lists(steps, min_size=1, max_size=3).map(tuple),
    policy=st.sampled_from(("available", "available", "available", "strict")),
    systemd=st.booleans(),
    write_interval=st.sampled_from((0.1, 0.1, 0.2, 0.5)),
    first_boot=st.integers(0, 19).map(lambda n: n == 19),  # shrinks to the warm start
)
