"""The unprivileged OS accounts the agent runs its children as (the package makes them).

* ``escmanager``: esc-manager, the northbound API. Its database role has the same name (peer
  authentication maps the OS user to the role of that name): no superuser, owner of the
  application database only. Its group may enter PostgreSQL's socket directory.
* ``exabgp``: ExaBGP (Debian's exabgp package makes it). It only connects out to the router.

:func:`setpriv_drop` is how a child is started as one: util-linux ``setpriv`` changes user,
group and supplementary groups (none) before it execs, and sets the parent-death signal after
the change (a change of credentials clears it otherwise).
"""

from __future__ import annotations

import grp
import pwd
from collections.abc import Sequence
from dataclasses import dataclass

from esc.errors import ConfigError

MANAGER_USER = "escmanager"
EXABGP_USER = "exabgp"


@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int

    @property
    def owner(self) -> tuple[int, int]:
        return self.uid, self.gid


def lookup(name: str, field: str) -> Account:
    """The account ``name``; a ConfigError naming ``field`` if the host has none."""
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        raise ConfigError(field, f"no user {name!r} on this host (the package makes it)") from None
    return Account(name, pw.pw_uid, pw.pw_gid)


def group_id(name: str, field: str) -> int:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        raise ConfigError(field, f"no group {name!r} on this host (the package makes it)") from None


def setpriv_drop(account: Account, ambient_caps: Sequence[str] = ()) -> list[str]:
    """``setpriv`` options that run the program as ``account``, with no supplementary group,
    and with ``ambient_caps`` (names like ``net_admin``) kept, if any."""
    opts = ["--reuid", str(account.uid), "--regid", str(account.gid), "--clear-groups"]
    if ambient_caps:
        caps = ",".join(f"+{c}" for c in ambient_caps)
        opts += ["--inh-caps", caps, "--ambient-caps", caps]
    return opts
