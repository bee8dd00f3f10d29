"""Backoff for failed northbound logins: pure bookkeeping, the clock passed in.

The rule (what :class:`LoginThrottle` decides before any password is checked):

* **Per client** (the remote address; an IPv6 client by its /64, what one host can pick from):
  the first ``CLIENT_FREE`` failures cost nothing; each further failure refuses the client for
  ``1, 2, 4, ...`` seconds, capped at ``CLIENT_CAP_S``. Refused means 429 with Retry-After and
  no password check at all (no scrypt, no database), even for the right password. A success
  from the client forgets its failures only if they were all for the user that succeeded (a
  typo, then the right password); else they stand: one valid account, say a read-only one,
  must not reset the backoff of guesses at another.
* **Per user** (the name tried, known or not): after ``USER_FREE`` failures from any clients
  the user is backed off the same way (capped at ``USER_CAP_S``), but *only for clients that
  have failed themselves* (recently, see below). A client with no failure on record always
  gets its password checked: 50 wrong passwords for ``admin`` from one address (or from many)
  never stop the right password from another address, with normal latency. A success does not
  clear the user's record (else the attacker's target would reset it by logging in).
* A record is forgotten ``FORGET_S`` after its last failure once its backoff has run out.
* Memory is bounded: at most ``max_keys`` clients and ``max_keys`` users are tracked; a new one
  beyond that evicts the one whose last failure is the oldest.

What this does not do (auth.py does it): cap the concurrent scrypt runs, and refuse a client
that has failed before at once instead of queueing it behind them.
"""

from __future__ import annotations

import ipaddress
import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

CLIENT_FREE = 5
CLIENT_CAP_S = 300.0
USER_FREE = 10
USER_CAP_S = 60.0
FORGET_S = 900.0
MAX_KEYS = 10_000


def client_key(host: str | None) -> str:
    """What a client is counted by: its IPv4 address, its IPv6 /64, or the host string as
    given (a unix socket: no address, all one client)."""
    if not host:
        return "-"
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.IPv6Network((addr, 64), strict=False))
    return str(addr)


_MANY = "\0"  # a record's subject when its failures were for more than one user


@dataclass
class _Record:
    failures: int
    last: float  # when the last failure was
    until: float  # refused before this instant
    subject: str | None = None  # the one user they were all for (_MANY: several)


class Backoff:
    """Failures per key: ``free`` failures, then ``base_s * 2**k`` seconds refused, capped."""

    def __init__(
        self,
        *,
        free: int,
        cap_s: float,
        base_s: float = 1.0,
        forget_s: float = FORGET_S,
        max_keys: int = MAX_KEYS,
    ) -> None:
        if free < 0 or base_s <= 0 or cap_s < base_s or max_keys < 1:
            raise ValueError("backoff: free >= 0, 0 < base_s <= cap_s, max_keys >= 1")
        self.free = free
        self.base_s = base_s
        self.cap_s = cap_s
        self.forget_s = forget_s
        self.max_keys = max_keys
        self._records: OrderedDict[str, _Record] = OrderedDict()  # oldest last failure first

    def __len__(self) -> int:
        return len(self._records)

    def _live(self, key: str, now: float) -> _Record | None:
        rec = self._records.get(key)
        if rec is not None and now >= rec.until and now - rec.last >= self.forget_s:
            del self._records[key]
            return None
        return rec

    def failures(self, key: str, now: float) -> int:
        rec = self._live(key, now)
        return 0 if rec is None else rec.failures

    def retry_after(self, key: str, now: float) -> int:
        """Whole seconds until ``key`` may try again (rounded up); 0: it may now."""
        rec = self._live(key, now)
        if rec is None or now >= rec.until:
            return 0
        return max(1, math.ceil(rec.until - now))

    def failed(self, key: str, now: float, subject: str | None = None) -> None:
        rec = self._live(key, now)
        if rec is None:
            rec = _Record(0, now, now, subject)
            self._records[key] = rec
            while len(self._records) > self.max_keys:
                self._records.popitem(last=False)
        else:
            self._records.move_to_end(key)
            if rec.subject != subject:
                rec.subject = _MANY
        rec.failures += 1
        rec.last = now
        over = rec.failures - self.free
        if over > 0:
            rec.until = max(rec.until, now + min(self.base_s * 2 ** min(over - 1, 62), self.cap_s))

    def forget(self, key: str, subject: str | None = None) -> None:
        """Drop ``key``'s record (with ``subject``: only if its failures were all for it)."""
        rec = self._records.get(key)
        if rec is not None and (subject is None or rec.subject == subject):
            del self._records[key]


class LoginThrottle:
    """The per-client and per-user rule of the module docstring, on ``clock`` (monotonic)."""

    def __init__(
        self,
        clock: Callable[[], float],
        *,
        clients: Backoff | None = None,
        users: Backoff | None = None,
    ) -> None:
        self.clock = clock
        self.clients = clients or Backoff(free=CLIENT_FREE, cap_s=CLIENT_CAP_S)
        self.users = users or Backoff(free=USER_FREE, cap_s=USER_CAP_S)

    def suspect(self, client: str) -> bool:
        """The client has failed recently (auth.py: it does not wait for a scrypt slot)."""
        return self.clients.failures(client, self.clock()) > 0

    def retry_after(self, client: str, user: str) -> int:
        """Seconds the client must wait before trying ``user`` (0: check the password)."""
        now = self.clock()
        wait = self.clients.retry_after(client, now)
        if wait or self.clients.failures(client, now) == 0:
            return wait
        return self.users.retry_after(user, now)

    def failed(self, client: str, user: str) -> None:
        now = self.clock()
        self.clients.failed(client, now, subject=user)
        self.users.failed(user, now)

    def succeeded(self, client: str, user: str) -> None:
        self.clients.forget(client, subject=user)
