"""Shared by the benchmarks: distributions, tables, the final JSON line, the lab pair."""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from collections.abc import Sequence
from typing import Any

from esc.cli.config_flags import arg_count, arg_seconds
from esc.config.schema import QuorumConfig
from esclab.lab import Lab


def dist(values: Sequence[float]) -> dict[str, float]:
    """min / median / p95 / max (nearest-rank p95) of ``values``."""
    if not values:
        return {"n": 0}
    v = sorted(values)
    p95 = v[max(0, math.ceil(0.95 * len(v)) - 1)]
    return {"n": len(v), "min": v[0], "median": statistics.median(v), "p95": p95, "max": v[-1]}


def fmt(d: dict[str, float], unit: str = "s", scale: float = 1.0) -> str:
    if not d.get("n"):
        return "no data"
    return " / ".join(f"{d[k] * scale:.3f}" for k in ("min", "median", "p95", "max")) + f" {unit}"


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True))  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def emit(name: str, figures: dict[str, Any]) -> None:
    """The final line: JSON with every figure, so runs can be compared."""
    print(
        json.dumps(
            {"bench": name, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **figures},
            sort_keys=True,
        )
    )


def fresh_pair(
    advert_int: float | None = None,
    pair: bool = True,
    quorum: str = "none",
    quorum_settings: dict[str, Any] | None = None,
) -> Lab:
    lab = Lab()
    lab.down()
    lab.up(
        "single",
        pair=pair,
        advert_int=advert_int,
        quorum=quorum,
        quorum_settings=quorum_settings,
    )
    return lab


def add_quorum_flags(ap: argparse.ArgumentParser) -> None:
    """``[quorum]``'s timing as flags (each left out keeps the schema's default)."""
    ap.add_argument("--lease-ttl", type=arg_count, help="[quorum] lease_ttl_s")
    ap.add_argument("--margin", type=arg_seconds, help="[quorum] margin_s")
    ap.add_argument("--election-ms", type=arg_count, help="[quorum] election_ms")
    ap.add_argument("--heartbeat-ms", type=arg_count, help="[quorum] heartbeat_ms")


def quorum_settings(ap: argparse.ArgumentParser, args: argparse.Namespace) -> QuorumConfig:
    """The ``[quorum]`` section the flags give, validated by the schema."""
    given = {
        "lease_ttl_s": args.lease_ttl,
        "margin_s": args.margin,
        "election_ms": args.election_ms,
        "heartbeat_ms": args.heartbeat_ms,
    }
    try:
        return QuorumConfig.model_validate({k: v for k, v in given.items() if v is not None})
    except ValueError as exc:
        ap.error(f"[quorum]: {exc}")
