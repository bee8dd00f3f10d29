"""WAL histories as a tree of records: every node's data is a pointer to its newest record.

A record has one parent, so two nodes' data have diverged exactly when neither tip is an
ancestor of the other. Each record also carries the timeline history of its branch (what
PostgreSQL keeps in its ``.history`` files), because that, not the tree, is what pg_rewind and
the WAL receiver compare.
"""

from __future__ import annotations

FIRST_LSN = 0x3000000
STEP = 0x100  # bytes of WAL per record

TimelineHistory = tuple[tuple[int, int], ...]  # (timeline, depth of its first record), oldest first


class Rec:
    __slots__ = ("depth", "hist", "parent", "tli", "write")
    parent: Rec | None
    depth: int
    tli: int
    write: str | None
    hist: TimelineHistory

    def __init__(
        self, parent: Rec | None, tli: int, write: str | None, hist: TimelineHistory | None = None
    ) -> None:
        self.parent = parent
        self.depth = 0 if parent is None else parent.depth + 1
        self.tli = tli
        self.write = write  # the client's transaction id; None for a record of the server's own
        if hist is None:
            hist = parent.hist if parent is not None else ((tli, 0),)
        self.hist = hist

    @property
    def lsn(self) -> int:
        return FIRST_LSN + self.depth * STEP

    def __repr__(self) -> str:
        return f"Rec(tl{self.tli} {self.depth} {self.write or '-'})"


def root() -> Rec:
    """initdb: timeline 1."""
    return Rec(None, 1, None)


def promoted(tip: Rec, tli: int) -> Rec:
    """The end-of-recovery record that opens timeline ``tli`` after ``tip``."""
    return Rec(tip, tli, None, (*tip.hist, (tli, tip.depth + 1)))


def contains(anc: Rec, desc: Rec) -> bool:
    """``anc`` is ``desc`` or one of its ancestors."""
    if anc.depth > desc.depth:
        return False
    r: Rec | None = desc
    while r is not None and r.depth > anc.depth:
        r = r.parent
    return r is anc


def common(a: Rec, b: Rec) -> Rec | None:
    """The newest record both histories share."""
    x: Rec | None = a
    y: Rec | None = b
    while x is not None and y is not None and x is not y:
        if x.depth >= y.depth:
            x = x.parent
        else:
            y = y.parent
    return x if x is y else None


def writes_after(base: Rec | None, tip: Rec) -> list[str]:
    """The client writes on ``tip``'s branch after ``base`` (oldest first)."""
    out: list[str] = []
    r: Rec | None = tip
    while r is not None and r is not base:
        if r.write is not None:
            out.append(r.write)
        r = r.parent
    out.reverse()
    return out


def all_writes(tip: Rec) -> set[str]:
    return set(writes_after(None, tip))


def rewind_point(target: Rec, source: Rec) -> int | None:
    """What pg_rewind concludes from the two timeline histories: None if no rewind is needed,
    else the depth of the first record to undo (the divergence point).

    Same newest timeline: "no rewind required", whatever the records are. Otherwise the
    histories part where they first differ; the target needs a rewind if it has records at or
    beyond that point."""
    th, sh = target.hist, source.hist
    if th[-1][0] == sh[-1][0]:
        return None
    i = 0
    while i < len(th) and i < len(sh) and th[i] == sh[i]:
        i += 1
    starts = [h[i][1] for h in (th, sh) if i < len(h)]
    point = min(starts)
    return point if target.depth >= point else None
