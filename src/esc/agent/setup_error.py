"""Why the agent did not start, kept where ``escadm status`` finds it: ``<run>/agent_error``.

The agent writes the file when its setup fails (a bad config, a host that owns neither node
address, a missing volume...) and removes it once its setup succeeded. Under systemd the
agent's stderr goes to the journal only; this file (and the agent's log) make the reason
visible to ``escadm status`` as ``agent not running: <reason>``.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from esc.config.schema import NodePaths, write_atomic

ERROR_FILE = "agent_error"


def error_file(paths: NodePaths) -> Path:
    return paths.run_dir / ERROR_FILE


def record(paths: NodePaths, message: str) -> None:
    """Keep ``message`` (one line) for ``escadm status``; best effort (the run dir may be what
    failed)."""
    with contextlib.suppress(OSError):
        write_atomic(error_file(paths), " ".join(message.split()) + "\n")


def clear(paths: NodePaths) -> None:
    with contextlib.suppress(OSError):
        error_file(paths).unlink(missing_ok=True)


def read(paths: NodePaths, since: float | None = None) -> str | None:
    """The last setup error, or None when there is none (or it cannot be read). With ``since``
    (a ``time.time()``), only an error written after it."""
    f = error_file(paths)
    try:
        if since is not None and f.stat().st_mtime < since:
            return None
        text = f.read_text().strip()
    except OSError:
        return None
    return text or None
