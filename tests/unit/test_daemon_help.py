"""``esc-manager --help`` and ``esc-haagent --help`` print their help and exit 0 without starting
anything; an unknown argument exits 2. Both exit inside argparse, before reading any config."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from esc.agent import main as agent_main
from esc.manager import main as manager_main

DAEMONS: list[tuple[str, Callable[[list[str]], int]]] = [
    ("esc-manager", manager_main.main),
    ("esc-haagent", agent_main.main),
]


@pytest.mark.parametrize(("prog", "main"), DAEMONS)
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_prints_and_exits_0(
    prog: str,
    main: Callable[[list[str]], int],
    flag: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("ESC_ROOT", str(tmp_path))  # were it to start, it would find nothing
    with pytest.raises(SystemExit) as exc:
        main([flag])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: {prog}")
    assert "ESC_ROOT" in out


@pytest.mark.parametrize(("prog", "main"), DAEMONS)
def test_an_unknown_argument_exits_2(
    prog: str, main: Callable[[list[str]], int], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--bogus"])
    assert exc.value.code == 2
    assert f"{prog}: error: unrecognized arguments: --bogus" in capsys.readouterr().err
