"""How much room the database has: free bytes on its data directory's filesystem, and on its
WAL's when ``pg_wal`` is a link to another one (the smaller counts: either full stops writes).
Measured as PostgreSQL's user sees it (``f_bavail``: not the blocks reserved for root)."""

from __future__ import annotations

import os
from pathlib import Path


def free_for_db(pgdata: Path) -> int | None:
    """Bytes free for the database, or None if there is no data directory yet (first boot, a
    clone under way) or it cannot be looked at."""
    free: int | None = None
    for where in (pgdata, pgdata / "pg_wal"):
        try:
            st = os.statvfs(where)  # follows a pg_wal link to its filesystem
        except OSError:
            if where == pgdata:
                return None
            continue  # no pg_wal (yet): the data directory's filesystem is the one
        room = st.f_bavail * st.f_frsize
        free = room if free is None else min(free, room)
    return free
