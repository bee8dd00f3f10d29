"""Login tickets (manager/tickets.py): a password check made on one node lets the same
credentials in on the node that takes over, without scrypt; nothing else gets in by them.
Real scrypt at a tiny cost, the two tables as dicts, an injected clock (no database)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from test_northbound_auth import PW, SMALL, Clock, CountingVerify, Users

from esc.errors import ConfigError
from esc.manager.auth import Authenticator, Verdict
from esc.manager.tickets import derive_key, load_key, ticket
from esc.manager.users import hash_password

KEY = derive_key("the pair's peer secret")


@dataclass
class Tickets:
    """login_tickets as a dict: mac -> expiry (on the shared clock)."""

    clock: Clock
    rows: dict[bytes, float] = field(default_factory=dict)
    puts: int = 0

    async def left(self, mac: bytes) -> float | None:
        exp = self.rows.get(mac)
        return None if exp is None or exp <= self.clock.now else exp - self.clock.now

    async def put(self, mac: bytes, ttl_s: float) -> None:
        self.puts += 1
        self.rows[mac] = self.clock.now + ttl_s


def node(users: Users, tickets: Tickets, verify: CountingVerify, key: bytes | None = KEY):
    return Authenticator(
        users, cost=SMALL, clock=tickets.clock, verify=verify, tickets=tickets, ticket_key=key,
        ticket_ttl_s=900,
    )  # fmt: skip


def pair() -> tuple[Users, Tickets]:
    return Users({"ops": (hash_password(PW, cost=SMALL), "admin")}), Tickets(Clock())


def test_the_node_that_takes_over_lets_a_checked_login_in_without_scrypt() -> None:
    users, tickets = pair()
    va, vb = CountingVerify(), CountingVerify()
    a, b = node(users, tickets, va), node(users, tickets, vb)
    assert asyncio.run(a.check("ops", PW, "192.0.2.1")) == Verdict("admin")
    assert len(va.costs) == 1 and tickets.puts == 1
    # the failover: b's memory cache is empty, the ticket came with the database
    assert asyncio.run(b.check("ops", PW, "192.0.2.1")) == Verdict("admin")
    assert vb.costs == []
    # the role is the users table's now, not the ticket's
    users.rows["ops"] = (users.rows["ops"][0], "read-only")
    tickets.clock.now += 10  # past b's memory cache
    assert asyncio.run(b.check("ops", PW, "192.0.2.1")) == Verdict("read-only")
    assert vb.costs == []


def test_a_ticket_lets_in_nothing_but_its_own_credentials() -> None:
    users, tickets = pair()
    users.rows["dev"] = (hash_password(PW, cost=SMALL), "admin")  # the same password
    a = node(users, tickets, CountingVerify())
    asyncio.run(a.check("ops", PW, "192.0.2.1"))
    vb = CountingVerify()
    b = node(users, tickets, vb)
    assert asyncio.run(b.check("ops", "wrong", "192.0.2.1")) == Verdict()
    assert asyncio.run(b.check("dev", PW, "192.0.2.2")) == Verdict("admin")  # its own check
    assert len(vb.costs) == 2  # both paid scrypt
    # another pair's key finds nothing either
    vc = CountingVerify()
    other = node(users, tickets, vc, key=derive_key("another secret"))
    assert asyncio.run(other.check("ops", PW, "192.0.2.3")) == Verdict("admin")
    assert len(vc.costs) == 1


def test_a_new_password_or_a_deleted_user_voids_the_tickets() -> None:
    users, tickets = pair()
    asyncio.run(node(users, tickets, CountingVerify()).check("ops", PW, "192.0.2.1"))
    users.rows["ops"] = (hash_password(PW, cost=SMALL), "admin")  # passwd: a new salt
    v = CountingVerify()
    assert asyncio.run(node(users, tickets, v).check("ops", PW, "192.0.2.1")) == Verdict("admin")
    assert len(v.costs) == 1
    del users.rows["ops"]
    v = CountingVerify()
    assert asyncio.run(node(users, tickets, v).check("ops", PW, "192.0.2.1")) == Verdict()
    assert len(v.costs) == 1  # the dummy hash, as for any unknown user


def test_tickets_expire_and_are_renewed_in_their_second_half() -> None:
    users, tickets = pair()
    asyncio.run(node(users, tickets, CountingVerify()).check("ops", PW, "192.0.2.1"))
    (mac,) = tickets.rows
    tickets.clock.now += 300  # two thirds left: used, not renewed
    asyncio.run(node(users, tickets, CountingVerify()).check("ops", PW, "192.0.2.1"))
    assert tickets.puts == 1
    tickets.clock.now += 200  # under half left: renewed for a whole TTL
    asyncio.run(node(users, tickets, CountingVerify()).check("ops", PW, "192.0.2.1"))
    assert tickets.puts == 2 and tickets.rows[mac] == tickets.clock.now + 900
    tickets.clock.now += 901  # expired: scrypt again, and a new ticket
    v = CountingVerify()
    assert asyncio.run(node(users, tickets, v).check("ops", PW, "192.0.2.1")) == Verdict("admin")
    assert len(v.costs) == 1 and tickets.puts == 3


def test_without_the_pairs_key_no_ticket_is_read_or_written() -> None:
    users, tickets = pair()
    asyncio.run(node(users, tickets, CountingVerify(), key=None).check("ops", PW, "192.0.2.1"))
    assert tickets.rows == {} and tickets.puts == 0


def test_the_key_is_the_pairs_and_not_the_secret(tmp_path: Path) -> None:
    assert derive_key("s") == derive_key("s") != derive_key("t")
    assert ticket(KEY, "a", "h", "b:c") != ticket(KEY, "a", "h:b", "c")  # fields stay apart
    assert ticket(KEY, "a", "h", "p") != ticket(KEY, "a", "h2", "p")
    path = tmp_path / "login.key"
    assert load_key(path) is None
    path.write_text(KEY.hex() + "\n")
    assert load_key(path) == KEY
    for bad in ["", "xyz", KEY.hex()[:-1], KEY.hex().upper()]:
        path.write_text(bad)
        with pytest.raises(ConfigError) as exc:
            load_key(path)
        assert exc.value.field == str(path)
