"""A blank volume gets its file system; anything else on it is refused, never formatted.

blkid and mkfs work on image files as on block devices, so these run on files in a tmp dir.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from esc.drivers.volume import ensure_filesystem
from esc.errors import DbError


def image(tmp_path: Path, name: str = "vol.img") -> Path:
    path = tmp_path / name
    with open(path, "wb") as f:
        f.truncate(16 * 1024 * 1024)
    return path


def fs_type(path: Path) -> str:
    res = subprocess.run(
        ["blkid", "-p", "-o", "value", "-s", "TYPE", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    return res.stdout.strip()


def test_a_blank_volume_is_formatted_once(tmp_path: Path) -> None:
    vol = image(tmp_path)
    assert ensure_filesystem(vol) is True
    assert fs_type(vol) == "ext4"
    assert ensure_filesystem(vol) is False  # already ext4: left as it is


def test_a_volume_with_something_else_on_it_is_refused(tmp_path: Path) -> None:
    vol = image(tmp_path)
    subprocess.run(["mkswap", "-q", str(vol)], check=True, capture_output=True)
    with pytest.raises(DbError, match="holds swap, not ext4: refusing"):
        ensure_filesystem(vol)
    assert fs_type(vol) == "swap"  # untouched
