"""The transition log: last 1,000 transitions (time, from, to, reason), persisted as JSON lines."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from esc.files import LOG_MODE, open_append, write_atomic

KEEP = 1000


class History:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._items: list[dict[str, Any]] = []
        try:
            for line in path.read_text().splitlines():
                try:
                    self._items.append(json.loads(line))
                except ValueError:
                    continue  # a torn last line after a power cut
        except FileNotFoundError:
            pass
        self._items = self._items[-KEEP:]

    def add(self, src: str, dst: str, reason: str, at: float | None = None) -> dict[str, Any]:
        item = {
            "time": at if at is not None else time.time(),
            "from": src,
            "to": dst,
            "reason": reason,
        }
        with self._lock:
            self._items.append(item)
            if len(self._items) > KEEP + KEEP // 10:
                self._items = self._items[-KEEP:]
                text = "".join(json.dumps(i) + "\n" for i in self._items)
                write_atomic(self.path, text, LOG_MODE)
            else:
                # (append-only: 0640, never through a symlink; one write per line)
                with os.fdopen(open_append(self.path), "a") as fh:
                    fh.write(json.dumps(item) + "\n")
        return item

    def last(self, n: int = KEEP) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._items[-n:])
