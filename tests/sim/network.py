"""The network between the two nodes: each direction and each kind of traffic can be cut.

Kinds: ``vrrp`` (keepalived's adverts, IP protocol 112), ``repl`` (PostgreSQL, TCP 5432: the WAL
stream, pg_rewind, the checkpoint on the source) and ``api`` (the agents' peer API, TCP 7400),
as the lab's ``partition --only vrrp|db|api|all`` cuts them. A cut drops packets (nftables
DROP): nothing is refused, connections time out. The client reaches both nodes all the time
(the northbound network is not cut).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

KINDS = ("vrrp", "repl", "api")
Link = tuple[str, str, str]  # (from node, to node, kind)


class Network:
    def __init__(self) -> None:
        self._parts: dict[int, frozenset[Link]] = {}
        self.cut: frozenset[Link] = frozenset()
        self.listeners: list[Callable[[], None]] = []

    def up(self, src: str, dst: str, kind: str) -> bool:
        return (src, dst, kind) not in self.cut

    def both(self, a: str, b: str, kind: str) -> bool:
        cut = self.cut
        return (a, b, kind) not in cut and (b, a, kind) not in cut

    def partition(self, key: int, links: Iterable[Link]) -> None:
        self._parts[key] = frozenset(links)
        self._changed()

    def heal(self, key: int | None = None) -> None:
        """Undo one partition, or all of them."""
        if key is None:
            self._parts.clear()
        else:
            self._parts.pop(key, None)
        self._changed()

    def _changed(self) -> None:
        cut = frozenset().union(*self._parts.values())
        if cut != self.cut:
            self.cut = cut
            for fn in self.listeners:
                fn()


def links(a: str, b: str, kinds: Iterable[str], direction: str) -> list[Link]:
    """The links a partition cuts: ``direction`` is ``both``, ``a>b`` or ``b>a``."""
    out: list[Link] = []
    for k in kinds:
        if direction in ("both", "a>b"):
            out.append((a, b, k))
        if direction in ("both", "b>a"):
            out.append((b, a, k))
    return out
