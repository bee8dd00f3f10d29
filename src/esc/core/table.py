"""The node state machine: every allowed transition lives in this one table.

Every role change passes through SWITCHING, so the state file never jumps MASTER <-> BACKUP:
an operator (or a script polling ``keepalived_state``) always sees the hand-over. Nothing
reroutes an edge: a rule names its edge from each state it can fire in (rules.py), a test
checks every one against this table, and ``check_transition`` raises on any other.
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


def allowed(current: NodeState, wanted: NodeState) -> bool:
    """Staying in a state is always allowed."""
    return current == wanted or wanted in ALLOWED[current]


def check_transition(current: NodeState, wanted: NodeState, reason: str = "") -> None:
    """Raise :class:`IllegalTransition` unless ``current -> wanted`` is in the table."""
    if not allowed(current, wanted):
        raise IllegalTransition(current, wanted, reason)
