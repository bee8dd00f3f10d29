"""Running commands for the lab: the project's one runner (``esc.drivers.proc.run``) and the
argv prefix that runs a command inside a lab host."""

from __future__ import annotations

from esc.drivers.proc import Result, run

__all__ = ["Result", "in_ns", "run"]


def in_ns(ns: str, *argv: str) -> list[str]:
    """argv to run inside network namespace ``ns``."""
    return ["ip", "netns", "exec", ns, *argv]
