"""Replay one schedule a failure printed: ``SIM_REPLAY='<json>' pytest tests/sim/test_replay.py``.

``SIM_TRACE=1``: the whole trace (with ``-s``, also of a run that passes)."""

from __future__ import annotations

import os

import pytest

from .pair import run
from .schedule import Schedule


@pytest.mark.skipif("SIM_REPLAY" not in os.environ, reason="SIM_REPLAY not set")
def test_replay() -> None:
    result = run(Schedule.from_json(os.environ["SIM_REPLAY"]))
    if os.environ.get("SIM_TRACE"):
        for t, who, text in result.trace:
            print(f"{t:9.3f} {who:9} {text}")
