"""A rule: an id, a condition, the edge it takes from each state it may fire in, and what it
does. ``decide()`` fires the first rule whose condition holds (rules.RULES)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType

from esc.core.facts import Ctx
from esc.core.table import allowed
from esc.model import Action, DbRole, Memory, NodeState, VrrpState

S = NodeState
ANY_VRRP = frozenset(VrrpState)
ANY_DB = frozenset(DbRole)


@dataclass(frozen=True)
class Then:
    """What a rule does: the actions in order (each idempotent), the sentence logged and shown,
    the memory carried to the next cycle, and, for a rule with sub-rules (serve's standby
    policy), the id of the one that applied."""

    actions: list[Action]
    reason: str
    mem: Memory
    sub: str = ""


@dataclass(frozen=True)
class Rule:
    id: str  # stable: in the history, the logs, the status and the tests
    summary: str  # one line for the rule table in docs/architecture.md
    when: Callable[[Ctx], bool]
    edges: Mapping[NodeState, NodeState]  # the state it leads to, from each it may fire in
    then: Callable[[Ctx], Then]
    # Where the rule can fire at all: keepalived's state and the local database's role. The
    # condition is tried only there (decide() indexes the rules by both).
    vrrp: frozenset[VrrpState] = ANY_VRRP
    db: frozenset[DbRole] = ANY_DB


def to(target: NodeState) -> Mapping[NodeState, NodeState]:
    """From any state straight to ``target`` (a test checks each edge against the table)."""
    return MappingProxyType({s: target for s in S})


def via(target: NodeState) -> Mapping[NodeState, NodeState]:
    """To ``target`` where the table allows it, else to SWITCHING first (the role change is
    shown): the next cycle, from SWITCHING, reaches ``target``."""
    return MappingProxyType({s: target if allowed(s, target) else S.SWITCHING for s in S})


def only(target: NodeState, *sources: NodeState) -> Mapping[NodeState, NodeState]:
    """Only from ``sources`` (the rule's condition holds in no other state)."""
    return MappingProxyType(dict.fromkeys(sources, target))


def where(
    rules: tuple[Rule, ...],
    *,
    vrrp: frozenset[VrrpState] = ANY_VRRP,
    db: frozenset[DbRole] | None = None,
) -> tuple[Rule, ...]:
    """The rules of a group, with the group's keepalived states (and, where the rule names
    none of its own, database roles)."""
    return tuple(
        replace(r, vrrp=vrrp, db=db if db is not None and r.db == ANY_DB else r.db) for r in rules
    )
