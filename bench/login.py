"""A real login's latency while others guess passwords: the northbound authenticator
(esc.manager.auth) at the shipped scrypt cost, in-process, no network, no database.

    .venv/bin/python bench/login.py [--runs 5] [--attackers 64]

Users are a dict (the ``users`` table's lookup is a primary-key probe either way); the scrypt
checks, the slots, the per-client cap and the backoff are the product's. Each run uses a new
authenticator (an empty cache), as a node that just took over without a login ticket:

* ``alone``: one right password (the baseline);
* ``one attacker``: ``--attackers`` wrong passwords at once from one address, then, while they
  are in flight, the right password from another address;
* ``many attackers``: the same wrong passwords from as many addresses (each within its free
  failures, so none is backed off);
* ``ticket``: the right password on a second node (a new authenticator) that finds the first
  node's login ticket: no scrypt;
* ``many attackers, ticket``: the many attackers again, the right password from a client that
  logged in before (its ticket in the table).

What the issue reported before the backoff and the slots: 64 concurrent wrong passwords raised
a real login from 76 ms to 2.6 s.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import dist, emit, fmt, table
from esc.config.types import decimal_int
from esc.manager.auth import Authenticator, Verdict
from esc.manager.tickets import derive_key
from esc.manager.users import hash_password

PW = "the right password"
KEY = derive_key("bench")


class Users:
    def __init__(self) -> None:
        self.rows = {"admin": (hash_password(PW), "admin")}

    async def lookup(self, name: str) -> tuple[str, str] | None:
        return self.rows.get(name)

    async def replace_hash(self, name: str, old: str, new: str) -> None:
        return None


class Tickets:
    def __init__(self) -> None:
        self.rows: dict[bytes, float] = {}

    async def left(self, mac: bytes) -> float | None:
        exp = self.rows.get(mac)
        return None if exp is None or exp <= time.monotonic() else exp - time.monotonic()

    async def put(self, mac: bytes, ttl_s: float) -> None:
        self.rows[mac] = time.monotonic() + ttl_s


async def timed_login(auth: Authenticator, client: str) -> float:
    t0 = time.perf_counter()
    verdict = await auth.check("admin", PW, client)
    if verdict != Verdict("admin"):
        raise SystemExit(f"the right password was refused: {verdict}")
    return time.perf_counter() - t0


async def under_attack(
    users: Users, attackers: int, one_address: bool, returning: bool = False
) -> float:
    tickets = Tickets()
    if returning:  # it logged in on the other node before
        await timed_login(Authenticator(users, tickets=tickets, ticket_key=KEY), "198.51.100.7")
    auth = Authenticator(users, tickets=tickets, ticket_key=KEY)
    guesses = [
        asyncio.create_task(
            auth.check("admin", f"guess {i}", "192.0.2.66" if one_address else f"192.0.2.{i + 1}")
        )
        for i in range(attackers)
    ]
    await asyncio.sleep(0.05)  # the guesses are in flight (their scrypt runs are started)
    took = await timed_login(auth, "198.51.100.7")
    await asyncio.gather(*guesses)
    return took


async def ticket(users: Users) -> float:
    tickets = Tickets()
    first = Authenticator(users, tickets=tickets, ticket_key=KEY)
    await timed_login(first, "198.51.100.7")
    second = Authenticator(users, tickets=tickets, ticket_key=KEY)
    return await timed_login(second, "198.51.100.7")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=decimal_int, default=5)
    ap.add_argument("--attackers", type=decimal_int, default=64)
    args = ap.parse_args()
    users = Users()
    results: dict[str, list[float]] = {
        k: [] for k in ("alone", "one", "many", "ticket", "many_ticket")
    }
    for _ in range(args.runs):
        results["alone"].append(asyncio.run(timed_login(Authenticator(users), "198.51.100.7")))
        results["one"].append(asyncio.run(under_attack(users, args.attackers, True)))
        results["many"].append(asyncio.run(under_attack(users, args.attackers, False)))
        results["ticket"].append(asyncio.run(ticket(users)))
        results["many_ticket"].append(asyncio.run(under_attack(users, args.attackers, False, True)))
    figures = {k: dist(v) for k, v in results.items()}
    base = figures["alone"]["median"]
    names = {
        "alone": "alone",
        "one": f"{args.attackers} wrong, one address",
        "many": f"{args.attackers} wrong, {args.attackers} addresses",
        "ticket": "ticket from the other node",
        "many_ticket": f"{args.attackers} wrong, {args.attackers} addresses; a ticket",
    }
    rows = [[names[k], fmt(figures[k]), f"{figures[k]['median'] / base:.2f}"] for k in results]
    print(f"a right login's latency, min / median / p95 / max over {args.runs} runs")
    print(table(rows, ["while", "latency", "median/alone"]))
    emit("login", {"runs": args.runs, "attackers": args.attackers, **figures})


if __name__ == "__main__":
    main()
