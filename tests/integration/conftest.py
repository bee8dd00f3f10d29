"""Lab fixtures shared by the integration modules: one lab per module, always torn down."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from labutil import NODES, eventually, lab_fixture, vip_holders, wait_pair

from esclab import faults
from esclab.lab import LAB_VIP, Lab


@pytest.fixture(scope="module")
def pair(request: pytest.FixtureRequest) -> Iterator[Lab]:
    """A lab (single topology) with the HA pair up, for the whole module."""
    yield from lab_fixture(request, kind="single")


@pytest.fixture
def healthy(pair: Lab) -> Iterator[tuple[str, str]]:
    """A healthy pair before the test (master, backup); healed and restored after it."""
    faults.heal(pair)
    yield wait_pair(pair)
    faults.heal(pair)
    for host in NODES:
        if not faults.component_pids(host, "agent"):
            faults.reboot(pair, host)
    wait_pair(pair)
    vip = LAB_VIP["single"]
    eventually(lambda: len(vip_holders(pair, vip)) == 1, 30, what="one VIP holder")
