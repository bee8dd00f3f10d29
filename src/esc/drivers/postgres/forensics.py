"""Diverged WAL, kept before pg_rewind destroys it: what pg_waldump shows committing, the heap
blocks those transactions touched, the rows they wrote (read in single-user mode), all in one
text file under ``data_root/diverged/``. The parsing is pure (tests/unit/test_postgres_pure.py).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from esc.drivers.postgres.process import Server
from esc.drivers.postgres.session import Sessions
from esc.drivers.postgres.settings import PgNode
from esc.drivers.postgres.status import format_lsn
from esc.drivers.postgres.tools import PgTools
from esc.errors import CommandError, DbError
from esc.files import write_atomic

log = logging.getLogger("esc.drivers.postgres")


def preserved_name(now: datetime, lsn: int) -> str:
    """``diverged-20261127T153000Z-0-3000060.txt``: when, and the divergence LSN."""
    stamp = now.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"diverged-{stamp}-{format_lsn(lsn).replace('/', '-')}.txt"


_SEGMENT = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})$")


def parse_segment(name: str, seg_size: int) -> tuple[int, int] | None:
    """A WAL segment file's (timeline, segment number), or None for any other file."""
    m = _SEGMENT.match(name)
    if m is None:
        return None
    return int(m[1], 16), int(m[2], 16) * (0x100000000 // seg_size) + int(m[3], 16)


def segment_name(tli: int, segno: int, seg_size: int) -> str:
    """PostgreSQL's name of WAL segment ``segno`` on timeline ``tli``."""
    per_id = 0x100000000 // seg_size
    return f"{tli:08X}{segno // per_id:08X}{segno % per_id:08X}"


def wal_start(names: Sequence[str], tli: int, lsn: int, seg_size: int) -> tuple[str, int] | None:
    """Where pg_waldump starts reading timeline ``tli`` from ``lsn``: (the segment file, the
    LSN), or None when the timeline has no segment at or after it. Named explicitly: without
    a start file pg_waldump takes its segment size from whichever file of the directory it
    meets first, and a preallocated segment (all zeros) makes it fail with "WAL segment size
    must be a power of two", keeping nothing (found by test_heal.py). A timeline that began
    after ``lsn`` (this node promoted itself later) is read from its first segment."""
    want = lsn // seg_size
    segnos = sorted(
        seg[1] for seg in (parse_segment(n, seg_size) for n in names) if seg and seg[0] == tli
    )
    later = [n for n in segnos if n >= want]
    if not later:
        return None
    first = later[0]
    return segment_name(tli, first, seg_size), lsn if first == want else first * seg_size


def count_waldump_records(text: str) -> int:
    return sum(1 for line in text.splitlines() if line.startswith("rmgr:"))


_COMMIT = re.compile(r"^rmgr: Transaction .*?tx:\s*(\d+),.*desc: COMMIT(?!_PREPARED)(.*)$", re.M)


_SUBXACTS = re.compile(r"subxacts:((?:\s+\d+)+)")


def committed_xids(text: str) -> list[int]:
    """Transaction ids (subtransactions included) that pg_waldump shows committing. Only
    these are data a client may have been told was saved; aborted or unfinished ones are not."""
    xids: dict[int, None] = {}
    for m in _COMMIT.finditer(text):
        xids[int(m[1])] = None
        sub = _SUBXACTS.search(m[2])
        for x in sub[1].split() if sub else ():
            xids[int(x)] = None
    return sorted(xids)


_BLOCKREF = re.compile(r"blkref #\d+: rel (\d+)/(\d+)/(\d+)(?: fork \w+)? blk (\d+)")


def touched_heap_blocks(text: str) -> dict[tuple[int, int, int], list[int]]:
    """(tablespace, database, relfilenode) -> sorted main-fork blocks of Heap/Heap2 records:
    where the diverged rows (inserted or new versions) can be found."""
    out: dict[tuple[int, int, int], set[int]] = {}
    for line in text.splitlines():
        if not line.startswith(("rmgr: Heap ", "rmgr: Heap2 ")):
            continue
        for m in _BLOCKREF.finditer(line):
            if " fork " in m[0]:
                continue
            out.setdefault((int(m[1]), int(m[2]), int(m[3])), set()).add(int(m[4]))
    return {key: sorted(blocks) for key, blocks in out.items()}


def diverged_rows_query(
    spc: int, relfilenode: int, blocks: Sequence[int], xids: Sequence[int]
) -> str:
    """One line of SQL (single-user mode reads one statement per line) printing a relation's
    name and, as XML, its rows written by ``xids`` in ``blocks``. One TID range scan per block
    (UNION ALL), so a large table is not read whole."""
    xid_array = "{" + ",".join(str(x) for x in xids) + "}"
    parts = [
        f"SELECT * FROM %1$s WHERE ctid >= '({b},0)' AND ctid < '({b + 1},0)'"
        f" AND xmin = ANY('{xid_array}'::xid[])"
        for b in blocks
    ]
    inner = " UNION ALL ".join(parts).replace("'", "''")
    return (
        "SELECT c.oid::regclass::text AS relation,"
        f" query_to_xml(format('{inner}', c.oid::regclass), true, false, '') AS rows"
        f" FROM pg_class c WHERE c.oid = pg_filenode_relation({spc}, {relfilenode})"
        " AND c.relkind IN ('r', 'm')"
    )


class Forensics:
    """Keeps what the local cluster committed after the divergence point (it is stopped)."""

    def __init__(self, node: PgNode, tools: PgTools, server: Server, sessions: Sessions) -> None:
        self.node = node
        self.tools = tools
        self.server = server
        self.sessions = sessions

    def preserve(self, host: str, lsn: int, tli: int) -> Path | None:
        """Keep what this node committed after the divergence point before pg_rewind replaces
        it: the pg_waldump text and, decoded in single-user mode, the rows those transactions
        wrote, in ``data_root/diverged/``. None when the WAL there holds no commit (a crash
        leaves only checkpoints): nothing acknowledged is lost then."""
        control = self.tools.controldata()
        local_tli = int(control.get("Latest checkpoint's TimeLineID", tli))
        seg_size = int(control.get("Bytes per WAL segment", 16 * 1024 * 1024))
        dumps = [(t, *self.waldump(lsn, t, seg_size)) for t in sorted({tli, local_tli})]
        text = "".join(d[1] for d in dumps)
        xids = committed_xids(text)
        if count_waldump_records(text) == 0:
            # pg_rewind says this node's WAL goes past the divergence point, and pg_waldump
            # read none of it: keep the segments themselves, whatever they hold.
            kept = self.keep_segments(lsn, tli, seg_size)
            log.error(
                "%s: pg_waldump read no record after %s (%s); the WAL segments are kept "
                "undecoded in %s",
                self.node.node_name,
                format_lsn(lsn),
                "; ".join(note for _t, _d, note in dumps),
                kept,
            )
        if not xids and count_waldump_records(text) > 0:
            log.info(
                "%s: no commit after %s; nothing to keep", self.node.node_name, format_lsn(lsn)
            )
            return None
        rows = self.decode_rows(host, text, xids) if xids else ""
        now = datetime.now(UTC)
        header = [
            "# ESC-HA: transactions this node committed that the new primary does not have.",
            f"# node: {self.node.node_name}  new primary: {host}:{self.node.peer_port}",
            f"# diverged at {format_lsn(lsn)} on timeline {tli}; local timeline {local_tli}",
            f"# written {now.isoformat(timespec='seconds')}",
            f"# WAL records: {count_waldump_records(text)}",
            f"# committed transactions: {' '.join(map(str, xids)) or 'unknown'}",
        ]
        sections = ["\n".join(header), "# --- rows they wrote (inserts, new row versions):", rows]
        for t, dump, note in dumps:
            head = f"# --- pg_waldump, timeline {t} from {format_lsn(lsn)}: {note}"
            sections.append(f"{head}\n{dump}")
        path = self.write_preserved(preserved_name(now, lsn), "\n".join(sections))
        log.warning(
            "%s: diverged at %s; %d committed transaction(s) kept in %s (pg_waldump: %s)",
            self.node.node_name,
            format_lsn(lsn),
            len(xids),
            path,
            "; ".join(f"timeline {t}: {note}" for t, _dump, note in dumps),
        )
        return path

    def keep_segments(self, lsn: int, tli: int, seg_size: int) -> Path:
        """Copy the WAL segments of timeline ``tli`` and later from the one holding ``lsn``
        on into ``data_root/diverged/wal-<stamp>-<lsn>/`` (pg_waldump can read them there)."""
        wal = self.node.pgdata / "pg_wal"
        name = preserved_name(datetime.now(UTC), lsn).replace("diverged-", "wal-")[: -len(".txt")]
        dest = self.node.diverged_dir / name
        dest.mkdir(parents=True, mode=0o700)
        os.chmod(self.node.diverged_dir, 0o700)
        for p in sorted(wal.iterdir()):
            seg = parse_segment(p.name, seg_size)
            if seg is not None and seg[0] >= tli and seg[1] >= lsn // seg_size:
                shutil.copy2(p, dest / p.name)
        return dest

    def write_preserved(self, name: str, text: str) -> Path:
        self.node.diverged_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.node.diverged_dir, 0o700)  # it holds application data
        path = self.node.diverged_dir / name
        write_atomic(path, text, 0o600, replace=False)  # never over an earlier dump
        return path

    def waldump(self, lsn: int, tli: int, seg_size: int) -> tuple[str, str]:
        """pg_waldump of timeline ``tli`` from ``lsn`` to the end of local WAL. It always ends
        with an error at the end of WAL ("invalid record length"), so exit 1 is normal; its
        message is kept."""
        wal = self.node.pgdata / "pg_wal"
        start = wal_start(sorted(p.name for p in wal.iterdir()), tli, lsn, seg_size)
        if start is None:
            return "", f"no segment of timeline {tli} at or after {format_lsn(lsn)}"
        name, from_lsn = start
        argv = [self.node.bin("pg_waldump"), "-s", format_lsn(from_lsn), str(wal / name)]
        try:
            proc = self.tools.run(argv, timeout=600, ok_codes=(0, 1))
        except CommandError as exc:
            return "", f"failed: {exc}"
        return proc.stdout, proc.stderr.strip().replace("\n", " | ") or "ok"

    def decode_rows(self, host: str, waldump: str, xids: list[int]) -> str:
        """Rows of the diverged transactions, read from the stopped local cluster in
        single-user mode (no socket, so no client can write meanwhile). Best effort: the
        pg_waldump text stays the record if this fails."""
        by_db: dict[int, list[str]] = {}
        for (spc, dboid, node), blocks in touched_heap_blocks(waldump).items():
            stmt = diverged_rows_query(spc, node, blocks[:1000], xids)
            by_db.setdefault(dboid, []).append(stmt)
        out: list[str] = []
        for dboid, statements in by_db.items():
            datname = self.database_name(host, dboid)
            if datname is None:
                out.append(f"# database oid {dboid}: unknown on the new primary; rows not read")
                continue
            out.append(f"# database {datname}:\n{self.server.single_user(datname, statements)}")
        return "\n".join(out)

    def database_name(self, host: str, dboid: int) -> str | None:
        try:
            with self.sessions.peer_session(host) as conn:
                rows = self.sessions.exec(
                    conn, "SELECT datname FROM pg_database WHERE oid = %s", [dboid]
                )
        except DbError as exc:
            log.warning("%s: cannot name database %d: %s", self.node.node_name, dboid, exc)
            return None
        return str(rows[0][0]) if rows else None
