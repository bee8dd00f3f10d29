"""Quorum mode (``ha.quorum = "etcd"``): what etcd's leader key and record of the pair add to
the two-node rules. Pure, like the rest of ``esc.core``.

The guarantee, and why it holds without trusting any clock:

- A primary acknowledges a write alone only after etcd records that it does (the record's
  ``sync`` is ""): it drops its standby from synchronous replication (``DropSync``) only once
  the view shows that record, written by a compare-and-swap that also requires it to hold the
  leader key (``RecordSync``; the keeper's transaction compares both).
- Only a node the record names may take the leader key (``may_lead``), and a standby promotes
  only as the key's holder **and** the recorded synchronous member (veto ``NOT_SYNC_MEMBER``).
  A recorded standby has every write the primary acknowledged; once the primary has recorded
  that it acknowledges alone, the standby can no longer be elected.
- A node serves (service active) only while it holds the leader key (veto ``NO_LEASE``), and
  its gate opens only then, with one exception: the recorded standby about to take the key
  may be elected (``campaigning``), and waits for the key without serving (``await-lease``).
  The keeper stops counting on the lease a margin before a whole lease has passed since its
  last renewal was sent; another node takes the key only a whole lease after it first saw
  that renewal, so the old holder has stopped serving before another node can take the key.

The lease timing decides only how fast a failover is, and that two nodes never serve at once;
losing no acknowledged write rests on the record alone.
"""

from __future__ import annotations

from dataclasses import replace

from esc.core.facts import Ctx, fmt_lsn
from esc.core.veto import Veto
from esc.model import Action, DbRole, DropSync, Memory, Observation, RecordSync, SyncRecord


def lease_ok(c: Ctx) -> bool:
    """This node may serve as far as the quorum is concerned (always, in two-node mode)."""
    q = c.obs.quorum
    return not c.cfg.quorum or (q is not None and q.holder)


def may_lead(c: Ctx) -> bool:
    """Take (or keep) the leader key: nothing but the lease stands in the way, and the record
    names this node. A primary database named there (or with no record yet: the pair's first
    primary); a standby only as the recorded synchronous member and while the peer does not
    serve. An operator's force-primary overrides the record."""
    if not c.cfg.quorum or c.veto not in (None, Veto.NO_LEASE):
        return False
    q, me, role = c.obs.quorum, c.cfg.node_name, c.obs.db.role
    rec = q.sync if q is not None else None
    if role is DbRole.PRIMARY:
        return c.mem.forced or rec is None or rec.names(me)
    if role is DbRole.STANDBY:
        recorded = c.mem.forced or (rec is not None and rec.sync == me)
        return recorded and not c.peer_serving
    return False


def unsync(c: Ctx, lsn: int) -> list[Action]:
    """Stop waiting for the standby: at once in two-node mode; in quorum mode only once etcd
    records that this primary acknowledges alone, and until then record it."""
    if not c.cfg.quorum:
        return [DropSync(lsn)]
    q = c.obs.quorum
    alone = SyncRecord(c.cfg.node_name, "")
    if q is not None and q.sync == alone:
        return [DropSync(lsn)]
    return [RecordSync(alone, q.sync_revision if q is not None else 0)]


def unsync_note(c: Ctx) -> str:
    q = c.obs.quorum
    if q is not None and q.sync == SyncRecord(c.cfg.node_name, ""):
        return "etcd records it; dropping it from sync"
    return "recording in etcd that we acknowledge alone before dropping it from sync"


def record_peer(c: Ctx) -> tuple[list[Action], str, Ctx]:
    """Quorum mode, the peer is our synchronous standby: record it in etcd as the sync member
    once it has replayed every write acknowledged before it became synchronous
    (``Memory.sync_from_lsn``), so that it may take over."""
    q, peer = c.obs.quorum, c.cfg.peer_name
    want = SyncRecord(c.cfg.node_name, peer)
    if not c.cfg.quorum or q is None or q.sync == want:
        return [], "", c
    since = c.mem.sync_from_lsn if c.mem.sync_from_lsn is not None else c.obs.db.lsn
    if since != c.mem.sync_from_lsn:
        c = replace(c, mem=replace(c.mem, sync_from_lsn=since))
    p = c.obs.peer
    if p.reachable and p.db_role is DbRole.STANDBY and p.lsn >= since:
        return [RecordSync(want, q.sync_revision)], f"recording {peer} in etcd as in sync", c
    return [], f"{peer} synchronous; recorded in etcd once it replays LSN {fmt_lsn(since)}", c


def sync_mark_after(obs: Observation, mem: Memory) -> Memory:
    """``sync_from_lsn`` lasts while the peer stays our synchronous standby."""
    if obs.db.sync_standby is None and mem.sync_from_lsn is not None:
        return replace(mem, sync_from_lsn=None)
    return mem
