"""The node state machine: every allowed transition lives in this one table.

Every role change passes through SWITCHING, so the state file never jumps MASTER <-> BACKUP:
an operator (or a script polling ``keepalived_state``) always sees the hand-over.
"""

from __future__ import annotations

from esc.errors import IllegalTransition
from esc.model import NodeState

S = NodeState
ALLOWED: dict[NodeState, frozenset[NodeState]] = {
    S.STOP: frozenset({S.SWITCHING, S.FAULT}),
    S.SWITCHING: frozenset({S.MASTER, S.BACKUP, S.FAULT, S.STOP}),
    S.MASTER: frozenset({S.SWITCHING, S.FAULT, S.STOP}),
    S.BACKUP: frozenset({S.SWITCHING, S.FAULT, S.STOP}),
    S.FAULT: frozenset({S.SWITCHING, S.BACKUP, S.STOP}),
}


def check_transition(current: NodeState, wanted: NodeState, reason: str = "") -> None:
    """Raise :class:`IllegalTransition` unless ``current -> wanted`` is in the table.

    Staying in a state is always allowed.
    """
    if current != wanted and wanted not in ALLOWED[current]:
        raise IllegalTransition(current, wanted, reason)


def route(current: NodeState, wanted: NodeState) -> NodeState:
    """The next state on the way to ``wanted``: itself if allowed, else via SWITCHING."""
    if current == wanted or wanted in ALLOWED[current]:
        return wanted
    return NodeState.SWITCHING
