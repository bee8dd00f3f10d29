"""The rules, in the order ``decide()`` tries them; the first whose condition holds fires.

One rule set per storage mode (``RULES``): ``replicated`` (each node its database, the standby
streams) and ``shared`` (ha_mode cinder: one database on a volume only one node attaches).
Groups, in order: guards (the agent's own fault, keepalived dead, gateway lost) -> first boot
(no database) -> database stopped -> keepalived MASTER (serving.py) -> keepalived BACKUP ->
keepalived FAULT/INIT/STOP. The gate (keepalived's track file) is open exactly when there is no veto
(veto.py), except where a rule closes it.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from esc.core.facts import Ctx, Mode, peer_desc, peer_outranks, winning_data
from esc.core.rule import Rule, Then, only, to, via, where
from esc.core.serving import MASTER_REPLICATED, MASTER_SHARED, PRIMARY, RUNNING, STANDBY
from esc.core.veto import STANDBY_WAITS, Veto, paused_primary, render
from esc.model import (
    Action,
    CloseGate,
    DbRole,
    Follow,
    InitPrimary,
    NodeState,
    OpenGate,
    RemoveVip,
    RestartVrrp,
    StartDb,
    VrrpState,
)

S = NodeState
GATE_SETTLE_S = 1.0  # keepalived reads the gate file a moment after it is written
AS_BACKUP = frozenset({VrrpState.BACKUP})
UNELECTED = frozenset({VrrpState.FAULT, VrrpState.INIT, VrrpState.STOP})


# --- guards -----------------------------------------------------------------------------------


def _agent_fault(c: Ctx) -> Then:
    acts: list[Action] = [CloseGate()]
    if c.obs.vip_held:
        acts.append(RemoveVip())
    return Then([*acts, *c.quiet], f"{_said(c)}: VIP given up, service off", c.mem)


def _vrrp_dead(c: Ctx) -> Then:
    acts: list[Action] = [CloseGate()]
    if c.obs.vip_held:
        acts.append(RemoveVip())
    return Then(
        [*acts, *c.quiet, RestartVrrp()],
        "keepalived not running: VIP removed, service off, restarting it",
        c.mem,
    )


def _gateway_lost(c: Ctx) -> Then:
    return Then(
        [CloseGate(), *c.quiet], f"gateway {c.cfg.gateway} unreachable: giving up the VIP", c.mem
    )


def _busy(c: Ctx) -> Then:
    return Then([CloseGate(), *c.quiet], f"{c.obs.busy} (in progress)", c.mem)


# A long action (a clone, a rewind) runs on its own thread and owns the database meanwhile:
# nothing else touches it, the node does not change state and vetoes the VIP.
_STAY = MappingProxyType({s: s for s in S})

GUARDS = (
    Rule("agent-fault", "the agent's own fault (its memory file unreadable, its cycles failing):"
         " give up the VIP, deactivate, never promote", lambda c: c.obs.fault is not None,
         to(S.FAULT), _agent_fault),
    Rule("vrrp-dead", "keepalived not running: drop its VIP, deactivate, restart it",
         lambda c: True, to(S.FAULT), _vrrp_dead, vrrp=frozenset({VrrpState.DEAD})),
    Rule("gateway-lost", "the gateway does not answer: an isolated node never serves (a "
         "paused primary serves on: its standby would not take over)",
         lambda c: c.obs.gateway_ok is False and not paused_primary(c), to(S.FAULT),
         _gateway_lost),
    Rule("long-action", "a clone or rewind under way: wait for it, the VIP vetoed",
         lambda c: c.obs.busy is not None, _STAY, _busy),
)  # fmt: skip


# --- no database yet ----------------------------------------------------------------------------


def _boot(c: Ctx, extra: list[Action], reason: str) -> Then:
    return Then([CloseGate(), *c.quiet, *extra], reason, c.mem)


def _may_create(c: Ctx) -> bool:
    p = c.obs.peer
    return c.mem.forced or (p.reachable and p.db_role is DbRole.ABSENT and c.cfg.first_node)


def _create(c: Ctx) -> Then:
    why = "forced by operator" if c.mem.forced else "first boot of the pair"
    return _boot(c, [InitPrimary()], f"creating the database: {why}")


FIRST_BOOT = where((
    Rule("first-boot-clone", "no database, the peer's is primary: clone it",
         lambda c: c.obs.peer.reachable and c.obs.peer.db_role is DbRole.PRIMARY,
         to(S.SWITCHING),
         lambda c: _boot(c, [Follow(c.cfg.peer_name)], f"cloning from {c.cfg.peer_name}")),
    Rule("first-boot-create", "no database on either node, we own the first address (or "
         "forced): create it", _may_create, to(S.SWITCHING),
         _create),
    Rule("first-boot-wait-peer", "no database, the peer silent: wait for it",
         lambda c: not c.obs.peer.reachable or c.obs.peer.db_role is None,
         to(S.SWITCHING),
         lambda c: _boot(c, [], f"no database yet: waiting for peer {c.cfg.peer_name}")),
    Rule("first-boot-wait-create", "no database: wait for the peer to create it",
         lambda c: True, to(S.SWITCHING), lambda c: _boot(
             c, [], f"no database yet: waiting for {c.cfg.peer_name} to create it")),
), db=frozenset({DbRole.ABSENT}))  # fmt: skip


# --- database stopped ---------------------------------------------------------------------------

# A node that had a role shows FAULT while its database is down; one still starting stays
# SWITCHING.
_STOPPED_EDGES: Mapping[NodeState, NodeState] = {
    S.MASTER: S.FAULT,
    S.BACKUP: S.FAULT,
    S.FAULT: S.FAULT,
    S.SWITCHING: S.SWITCHING,
    S.STOP: S.SWITCHING,
}


DB_STOPPED = where((
    Rule("db-stopped-follow", "database stopped, the peer serves: follow it",
         lambda c: c.peer_serving, _STOPPED_EDGES,
         lambda c: _boot(c, [Follow(c.cfg.peer_name)],
                         f"database stopped: following {c.cfg.peer_name}, which serves")),
    Rule("db-stopped-start", "database stopped: start it", lambda c: True, _STOPPED_EDGES,
         lambda c: _boot(c, [StartDb()], "database stopped: starting it")),
), db=frozenset({DbRole.STOPPED}))  # fmt: skip


# --- keepalived BACKUP --------------------------------------------------------------------------


def _gate(c: Ctx) -> Action:
    return OpenGate() if c.veto is None else CloseGate()


def _standing(c: Ctx, extra: list[Action], reason: str) -> Then:
    """BACKUP and FAULT/INIT/STOP: the gate follows the veto, the service stays off."""
    return Then([_gate(c), *c.quiet, *extra], reason, c.mem)


def _standby_reason(c: Ctx) -> str:
    db = c.obs.db
    if db.streaming:
        lag = max(0, db.receive_lsn - db.lsn)
        return f"standby: streaming from {c.cfg.peer_name}, replay lag {lag} B"
    return f"standby: not streaming ({peer_desc(c.obs, timed=False)})"


BACKUP_REPLICATED = where((
    Rule("demote", "both primaries, the peer's data newer: follow it",
         lambda c: c.both_primary and peer_outranks(c), to(S.SWITCHING),
         lambda c: _standing(c, [Follow(c.cfg.peer_name)],
                             f"demoting: following {c.cfg.peer_name} ({winning_data(c)})")),
    Rule("backup-split-keep", "both primaries, our data newer: wait for the peer to yield",
         lambda c: c.both_primary, to(S.SWITCHING),
         lambda c: _standing(c, [], f"split brain: keeping our {winning_data(c)}; waiting "
                                    f"for {c.cfg.peer_name} to yield")),
    Rule("backup-primary-wait", "a primary database: wait for a primary to follow",
         lambda c: True, to(S.SWITCHING),
         lambda c: _standing(c, [], "keepalived BACKUP, database primary: waiting for a "
                                    "primary")),
    Rule("standby", "a standby database: be the standby", lambda c: True, via(S.BACKUP),
         lambda c: _standing(c, [], _standby_reason(c)), db=STANDBY),
), vrrp=AS_BACKUP, db=PRIMARY)  # fmt: skip

BACKUP_SHARED = where((
    Rule("backup-release-volume", "the volume attached: release it",
         lambda c: True, to(S.SWITCHING),
         lambda c: _standing(c, [Follow(c.cfg.peer_name)],
                             "keepalived BACKUP: releasing the shared volume")),
    Rule("standby-shared", "the volume not attached: be the standby", lambda c: True,
         via(S.BACKUP), lambda c: _standing(
             c, [], f"standby: the shared volume is {c.cfg.peer_name}'s to use"), db=STANDBY),
), vrrp=AS_BACKUP, db=PRIMARY)  # fmt: skip


# --- keepalived FAULT, INIT or STOP: not electable now -------------------------------------------
# (With a shared volume, a primary database releases the volume first: FOLLOW_NEWER is a
# replicated rule only.)


def _settling(c: Ctx) -> bool:
    opened = c.mem.gate_opened_at
    return opened is not None and c.obs.now - opened < GATE_SETTLE_S


def _unvetoed(c: Ctx) -> bool:
    return c.veto is None


def _vetoed(c: Ctx) -> bool:
    return c.veto is not None


def _fault_gate_open(c: Ctx) -> bool:
    # keepalived FAULT right after the gate opened is not a fault yet.
    return c.obs.vrrp is VrrpState.FAULT and c.obs.gate_open and not _settling(c)


QUORUM_WAITS = frozenset({Veto.NO_LEASE, Veto.NOT_SYNC_MEMBER})


def _waits_as_standby(c: Ctx) -> bool:
    return c.state in (S.BACKUP, S.SWITCHING) and c.veto in STANDBY_WAITS


def _said(c: Ctx) -> str:
    return render(c.veto, c) if c.veto is not None else ""


def _vrrp(c: Ctx) -> str:
    return c.obs.vrrp.value


FOLLOW_NEWER = Rule(
    "follow-newer-primary", "both primaries, the peer's data newer: follow it",
    lambda c: c.both_primary and peer_outranks(c), to(S.SWITCHING),
    lambda c: _standing(c, [Follow(c.cfg.peer_name)],
                        f"{c.cfg.peer_name} is primary with {winning_data(c)}: following it"),
    vrrp=UNELECTED, db=PRIMARY,
)  # fmt: skip

UNELECTABLE = where((
    Rule("fault-gate-open", "keepalived FAULT with the gate open and settled (interface "
         "down?)", lambda c: _unvetoed(c) and _fault_gate_open(c), to(S.FAULT),
         lambda c: _standing(c, [], "keepalived FAULT with the gate open (interface down?)")),
    Rule("standby-gate-open", "a standby, eligible: wait for keepalived",
         lambda c: _unvetoed(c) and c.state is S.BACKUP, only(S.BACKUP, S.BACKUP),
         lambda c: _standing(c, [], "standby: gate open, waiting for keepalived"),
         db=STANDBY),
    Rule("gate-opening", "keepalived FAULT, eligible: open the gate",
         lambda c: _unvetoed(c) and c.obs.vrrp is VrrpState.FAULT, to(S.SWITCHING),
         lambda c: _standing(c, [], "opening the gate: may hold the VIP")),
    Rule("await-election", "eligible: wait for keepalived's election", _unvetoed,
         to(S.SWITCHING),
         lambda c: _standing(c, [], f"keepalived {_vrrp(c)}: waiting for the election")),
    Rule("wait-vetoed", "cold boot or handing over: wait",
         lambda c: c.veto in (Veto.COLD_BOOT, Veto.HANDING_OVER), to(S.SWITCHING),
         lambda c: _standing(c, [], _said(c))),
    Rule("standby-not-electable", "a standby, outdated or the peer's data newer: stay the "
         "standby", _waits_as_standby, only(S.BACKUP, S.BACKUP, S.SWITCHING),
         lambda c: _standing(c, [], f"standby, not electable: {_said(c)}"), db=STANDBY),
    Rule("standby-quorum-wait", "quorum: a standby without the leader key, or not recorded in "
         "sync: a standby all the same", lambda c: c.veto in QUORUM_WAITS, via(S.BACKUP),
         lambda c: _standing(c, [], f"standby: {_said(c)}"), db=STANDBY),
    Rule("not-electable", "vetoed: not electable", _vetoed, to(S.FAULT),
         lambda c: _standing(c, [], f"keepalived {_vrrp(c)}: {_said(c)}")),
), vrrp=UNELECTED, db=RUNNING)  # fmt: skip

UNELECTABLE_SHARED = (
    Rule("release-volume", "not electable with the volume attached: release it",
         lambda c: True, to(S.SWITCHING),
         lambda c: _standing(c, [Follow(c.cfg.peer_name)],
                             f"keepalived {_vrrp(c)}: releasing the shared volume"),
         vrrp=UNELECTED, db=PRIMARY),
    *UNELECTABLE,
)  # fmt: skip

_HEAD = (*GUARDS, *FIRST_BOOT, *DB_STOPPED)

RULES: dict[Mode, tuple[Rule, ...]] = {
    "replicated": (*_HEAD, *MASTER_REPLICATED, *BACKUP_REPLICATED, FOLLOW_NEWER, *UNELECTABLE),
    "shared": (*_HEAD, *MASTER_SHARED, *BACKUP_SHARED, *UNELECTABLE_SHARED),
}

# The rules that can fire for each keepalived state and database role, in order: decide()
# tries only these (the same first match as trying every rule of RULES[mode]).
INDEX: dict[Mode, dict[tuple[VrrpState, DbRole], tuple[Rule, ...]]] = {
    mode: {
        (v, d): tuple(r for r in rules if v in r.vrrp and d in r.db)
        for v in VrrpState
        for d in DbRole
    }
    for mode, rules in RULES.items()
}
