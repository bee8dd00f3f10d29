"""Named schedules: what the pair must do in known situations, and the failures the
simulation found, each kept as the scenario that reproduced it (a failure not fixed at once is
marked ``xfail(strict=True)``: it fails loudly the moment a fix makes it pass)."""

from __future__ import annotations

from .pair import Result, run
from .schedule import Fault, Schedule, Step


def texts(r: Result, who: str | None = None) -> list[str]:
    return [text for _, w, text in r.trace if who is None or w == who]


def mentions(r: Result, phrase: str, who: str | None = None) -> bool:
    return any(phrase in t for t in texts(r, who))


# --- what the pair does ----------------------------------------------------------------------


def test_first_boot_creates_the_database_on_the_first_node_and_clones_it() -> None:
    r = run(Schedule(seed=1, steps=(), first_boot=True))
    assert r.master == "esc-ha-0"
    assert mentions(r, "creating the database: first boot of the pair", "esc-ha-0")
    assert mentions(r, "cloning from esc-ha-0", "esc-ha-1")
    assert r.acks


def test_the_standby_takes_over_when_the_primary_loses_power() -> None:
    s = Schedule(seed=2, steps=(Step(1.0, Fault("reboot", node=0, duration=6.0)),))
    r = run(s)
    assert r.master == "esc-ha-1"
    assert mentions(r, "promoting self: keepalived MASTER", "esc-ha-1")
    # esc-ha-0 rejoins as a standby, outdated until it has caught up
    assert mentions(r, "standby, not electable: outdated", "esc-ha-0")
    after = [a for a in r.acks if a.node == "esc-ha-1"]
    assert after and not r.allowed


def test_a_switchover_hands_the_role_to_the_caught_up_standby() -> None:
    r = run(Schedule(seed=3, steps=(Step(1.0, Fault("switchover", node=-1)),)))
    assert r.master == "esc-ha-1"
    assert mentions(r, "switchover: switchover to esc-ha-1 started", "esc-ha-0")
    assert mentions(r, "caught up at LSN", "esc-ha-0")


def test_a_vrrp_only_partition_is_held_down_while_the_primary_serves() -> None:
    s = Schedule(seed=4, steps=(Step(1.0, Fault("partition", what="vrrp", duration=5.0)),))
    r = run(s)
    assert r.master == "esc-ha-0"
    assert mentions(r, "refusing the VIP while it serves", "esc-ha-1")
    assert not mentions(r, "promoted")


def test_a_replication_partition_degrades_the_primary_and_sync_comes_back() -> None:
    s = Schedule(seed=5, steps=(Step(1.0, Fault("partition", what="repl", duration=12.0)),))
    r = run(s)
    assert r.master == "esc-ha-0"
    assert mentions(r, "asynchronous, esc-ha-1 outdated from LSN", "esc-ha-0")
    assert mentions(r, "standby, not electable: outdated", "esc-ha-1")
    assert mentions(r, "esc-ha-1 back in sync", "esc-ha-0")


def test_strict_never_acknowledges_alone() -> None:
    s = Schedule(
        seed=6,
        policy="strict",
        steps=(Step(1.0, Fault("partition", what="all", duration=12.0)),),
    )
    r = run(s)
    assert not [a for a in r.acks if a.alone]
    assert mentions(r, "no synchronous standby: writes wait (strict)")


def test_a_run_is_a_pure_function_of_its_schedule() -> None:
    s = Schedule(
        seed=7,
        steps=(
            Step(0.5, Fault("pause", node=0, what="node", duration=3.0)),
            Step(0.0, Fault("partition", what="api", direction="b>a", duration=4.0)),
        ),
    )
    assert run(s).trace == run(s).trace


# --- known failures --------------------------------------------------------------------------

ISSUE_14 = Schedule(seed=3, steps=(Step(1.0, Fault("partition", what="all", duration=12.0)),))


def test_issue_14_acknowledged_writes_survive_the_heal_of_a_full_partition() -> None:
    """Fixed by the data rank (core/decide.data_rank): esc-ha-1, promoted on timeline 2, outranks
    esc-ha-0 (priority 101 + 0 against 100 + 2), so on the heal esc-ha-0 hears a higher-priority
    advert, goes BACKUP and never answers with a gratuitous ARP; no write is acknowledged on
    the history about to be rewound."""
    run(ISSUE_14)


def test_issue_14_a_promoted_standby_that_never_served_yields_to_the_serving_primary() -> None:
    """Was the window the data rank left open (KNOWN_ISSUE_14): the peer API is cut while VRRP
    still works, and keepalived on esc-ha-0 pauses for 0.6 s; esc-ha-1 is elected and promotes
    to timeline 2, but esc-ha-0's keepalived resumes 31 ms after the election, before
    esc-ha-1's agent has even decided, and takes the VIP back (priority 101 against 100).
    esc-ha-0 serves DEGRADED on timeline 1 for 9 s. When the peer API heals, both are
    primaries: the timelines alone made esc-ha-1 (timeline 2) win and esc-ha-0's acknowledged
    writes went into its dump, the last ones acknowledged after the heal. esc-ha-1 never served
    on timeline 2 (Memory.served_timeline, in its peer view), so it holds no write a client was
    told about beyond esc-ha-0's: the serving primary wins (core/facts.served_decides),
    esc-ha-1 is rewound and follows, and every acknowledged write is on esc-ha-0."""
    s = Schedule(
        seed=0,
        steps=(
            Step(0.0, Fault("partition", node=0, what="all", duration=0.1)),
            Step(0.0, Fault("partition", node=0, what="api", duration=9.5)),
            Step(0.0, Fault("pause", node=-1, what="keepalived", duration=0.6)),
        ),
    )
    r = run(s)
    assert r.master == "esc-ha-0"
    assert mentions(r, "keeping the role (data that served", "esc-ha-0")
    assert mentions(r, "demoting: following esc-ha-0 (data that served)", "esc-ha-1")
    assert mentions(r, "effective priority 98 (rank -2)", "esc-ha-1")  # unserved: below


def test_a_standby_that_never_streamed_the_new_timeline_promotes_to_another_id() -> None:
    """Found by the simulation (was KNOWN_TIMELINE_REUSE): esc-ha-0 (systemd: its database dies
    with its agent) rejoins as a standby by 'reconfigure', whose start returns before the WAL
    receiver has streamed anything; esc-ha-1, the new primary on timeline 2, dies with its
    agent at that moment; esc-ha-0 is elected and promoted to timeline 2 again, over another
    history (pg_rewind and the WAL receiver compare ids, not records). Promote now carries the
    peer's last timeline, and the driver reserves the ids up to it: esc-ha-0 opens 3."""
    s = Schedule(
        seed=0,
        policy="strict",
        systemd=True,
        steps=(
            Step(0.5, Fault("kill", node=0, what="agent", duration=0.3)),
            Step(0.6, Fault("kill", node=1, what="agent", duration=0.5)),
        ),
    )
    r = run(s)
    assert mentions(r, "postgres promoted: timeline 3", "esc-ha-0")


def test_a_replayed_write_waits_for_the_standby_like_a_commit() -> None:
    """Found by the simulation (was KNOWN_REPLAY_WITHOUT_STANDBY): a commit waiting for the
    frozen standby is durable on the primary; PostgreSQL on the primary crashes and is
    restarted by the agent, so the waiting transaction is now committed, and the client
    retries with the same transaction id. The replay wrote no WAL, so it did not wait for the
    standby: acknowledged without it, not DEGRADED, and lost when the primary then lost power.
    The replay now takes a transaction id (store.accept), so its commit waits for the standby
    like any write."""
    s = Schedule(
        seed=0,
        steps=(
            Step(0.5, Fault("pause", node=1, what="node", duration=10.0)),
            Step(2.0, Fault("kill", node=0, what="postgres")),
            Step(2.0, Fault("reboot", node=0, duration=12.0)),
        ),
    )
    run(s)


def test_a_stuck_standby_sees_its_outdated_mark_before_the_primary_acknowledges_alone() -> None:
    """Found by the simulation (was KNOWN_OUTDATED_MARK_UNSEEN): esc-ha-0 dropped its lost
    standby from sync after the grace, marked it outdated and acknowledged alone at once; the
    mark reached esc-ha-1 only when its agent next read the peer view, and that agent was stuck
    for seconds in calls to its frozen database; esc-ha-0 lost power, and esc-ha-1 promoted
    over the acknowledged writes (the peer API was up all along). Now the primary waits, while
    the standby's agent answers and cycles, until the standby's view shows it holds the mark
    (serve/grace-over-tell), and a standby keeps the last mark its poller heard from a primary
    that went silent (core/learn.py): esc-ha-1 refuses the VIP as outdated."""
    s = Schedule(
        seed=1590,
        write_interval=0.05,
        steps=(
            Step(0.0, Fault("partition", what="vrrp,repl", duration=10.6)),
            Step(5.1, Fault("pause", node=1, what="postgres", duration=12.0)),
            Step(4.8, Fault("reboot", node=0, duration=10.1)),
        ),
    )
    r = run(s)
    assert mentions(r, "writes wait until it has seen the mark", "esc-ha-0")
    assert mentions(r, "outdated: the primary dropped us from sync", "esc-ha-1")


def test_the_loser_of_a_split_brain_takes_the_winners_mark_and_waits_when_it_dies() -> None:
    """Found by the simulation once KNOWN_OUTDATED_MARK_UNSEEN no longer hid it: esc-ha-0's
    keepalived freezes, esc-ha-1 promotes to timeline 2, marks esc-ha-0 outdated and
    acknowledges alone; esc-ha-0, still primary, yields to the newer data, then esc-ha-1 loses
    power. Two primaries ignored each other's marks, so esc-ha-0 served its older data again
    and esc-ha-1's acknowledged writes ended in a dump. The loser now takes the winner's mark
    (core/learn.py) and refuses the VIP until esc-ha-1 is back."""
    s = Schedule(
        seed=0,
        steps=(
            Step(0.0, Fault("partition", node=0, what="all", duration=0.5)),
            Step(0.0, Fault("pause", node=-1, what="keepalived", duration=1.3)),
            Step(0.9, Fault("reboot", node=-1, duration=1.0)),
        ),
    )
    r = run(s)
    assert mentions(r, "outdated: the primary dropped us from sync", "esc-ha-0")
    assert r.master == "esc-ha-1"


def test_a_newer_primary_is_not_outdated_by_its_peer_after_a_double_reboot() -> None:
    """Found by the simulation (was KNOWN_OUTDATED_PRIMARY): a one-way partition (esc-ha-0 to
    esc-ha-1, VRRP and peer API) makes both nodes primary and each marks the other outdated;
    both reboot, and at boot each agent sees its own database stopped and takes the peer
    primary's mark (a stopped standby must: its primary may have marked it before it died).
    esc-ha-1's data is the newer primary's: once started, a primary that outranks the peer
    primary (or that the peer follows) drops the mark (core/learn.py), so it serves, and
    esc-ha-0 follows it. (esc-ha-0 keeps the mark from the start: esc-ha-1, its database
    still starting, says it served on timeline 2, newer than esc-ha-0's 1.)"""
    s = Schedule(
        seed=1,
        steps=(
            Step(1.7, Fault("partition", what="vrrp,api", direction="a>b", duration=12.0)),
            Step(6.2, Fault("reboot", node=1, duration=5.9)),
            Step(2.9, Fault("reboot", node=0, duration=1.7)),
        ),
    )
    r = run(s)
    assert r.master == "esc-ha-1"
    assert mentions(r, "outdated: the primary dropped us from sync", "esc-ha-0")
    assert mentions(r, "esc-ha-1 is primary with newer data: following it", "esc-ha-0")


def test_a_switchover_to_a_standby_still_marked_outdated_is_refused() -> None:
    """Found by the simulation (was KNOWN_SWITCHOVER_STALL): esc-ha-1, primary after a
    failover, names esc-ha-0 synchronous again while ActivateService fails (its manager was
    just killed) and its agent freezes before the next cycle, so the outdated mark (cleared
    when it next serves) is still set when a queued switchover is taken. Accepted, esc-ha-0
    would veto itself when elected and leave no MASTER for a minute (HANDOVER_LIMIT_S); it is
    refused (core/requests.switchover_refusal), and the pair converges."""
    s = Schedule(
        seed=0,
        steps=(
            Step(2.9, Fault("kill", node=0, what="keepalived")),
            Step(1.0, Fault("kill", node=1, what="manager")),
            Step(0.6, Fault("pause", node=1, what="agent", duration=3.7)),
            Step(1.0, Fault("switchover", node=1)),
        ),
    )
    r = run(s)
    assert mentions(r, "switchover refused: peer esc-ha-0 is still marked outdated", "esc-ha-1")


def test_two_standbys_that_follow_each_other_for_a_moment_recover() -> None:
    """Found by the search (seed 1314, 2026-12-03): both databases paused, then a partition.
    Each node, from a stale view, follows the other, so both are standbys streaming from each
    other for a moment (real PostgreSQL cascades so); the simulation's instant streaming
    recursed for ever around that loop. The pair recovers: keepalived elects one, it
    promotes."""
    s = Schedule.from_json(
        '{"seed":0,"steps":[{"gap":0.1,"fault":{"kind":"pause","node":-1,"what":"postgres",'
        '"direction":"both","duration":0.9}},{"gap":0.0,"fault":{"kind":"partition","node":0,'
        '"what":"all","direction":"both","duration":0.6}}],"policy":"available",'
        '"systemd":false,"write_interval":0.1,"first_boot":false}'
    )
    r = run(s)
    assert r.master is not None
    assert mentions(r, "following it", "esc-ha-0") and mentions(r, "following it", "esc-ha-1")
