"""Running commands for the lab: one seam (``Runner``) so pure logic stays testable."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

from esc.errors import CommandError


@dataclass(frozen=True)
class Result:
    returncode: int
    stdout: str
    stderr: str


def run(
    argv: Sequence[str], check: bool = True, timeout: float = 60.0, input_: str | None = None
) -> Result:
    """Run ``argv`` (never through a shell); raise CommandError on failure when ``check``."""
    try:
        proc = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=timeout, input=input_, check=False
        )
    except FileNotFoundError as exc:
        raise CommandError(list(argv), 127, str(exc)) from exc
    except subprocess.TimeoutExpired as exc:
        raise CommandError(list(argv), -1, f"timed out after {timeout}s") from exc
    if check and proc.returncode != 0:
        raise CommandError(list(argv), proc.returncode, proc.stderr)
    return Result(proc.returncode, proc.stdout, proc.stderr)


def in_ns(ns: str, *argv: str) -> list[str]:
    """argv to run inside network namespace ``ns``."""
    return ["ip", "netns", "exec", ns, *argv]
