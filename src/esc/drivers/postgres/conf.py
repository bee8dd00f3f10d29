"""The files and command lines the driver writes for PostgreSQL: pg_hba, pg_ident, the shared
block of postgresql.conf, a standby's postgresql.auto.conf, the passfile, the ``pg_ctl -o``
options. Pure: no I/O (unit-tested in tests/unit/test_postgres_pure.py).
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from collections.abc import Sequence
from pathlib import Path

from esc.drivers.postgres.settings import (
    APP_ROLE,
    CONF_BEGIN,
    CONF_END,
    IDENT_MAP,
    REPL_ROLE,
    SUPERUSER,
)
from esc.errors import ConfigError


def quote_ident(name: str) -> str:
    """Double-quote an identifier (as in ``synchronous_standby_names``)."""
    return '"' + name.replace('"', '""') + '"'


def conf_quote(value: str) -> str:
    """A postgresql.conf string literal. The conf parser de-escapes backslashes, so double them
    (a passfile path with a backslash would otherwise change meaning)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def passfile_escape(field: str) -> str:
    """Escape ``\\`` and ``:`` for one field of a libpq passfile line."""
    return field.replace("\\", "\\\\").replace(":", "\\:")


def passfile_text(user: str, password: str) -> str:
    """One line matching every host, port and database (``replication`` included) for ``user``."""
    return f"*:*:*:{passfile_escape(user)}:{passfile_escape(password)}\n"


def sync_names_value(standby_name: str | None) -> str:
    """The ``synchronous_standby_names`` value naming one standby ('' = asynchronous)."""
    return "" if standby_name is None else quote_ident(standby_name)


def pair_sync_names(a: str, b: str) -> str:
    """The symmetric value for the shared postgresql.conf: a node never matches itself, so both
    nodes carry the same line and each waits for the other."""
    first, second = sorted((a, b))
    return f"FIRST 1 ({quote_ident(first)}, {quote_ident(second)})"


def hba_address(host: str) -> str:
    """``192.0.2.11`` -> ``192.0.2.11/32``; ``2001:db8::b`` -> ``2001:db8::b/128``.

    pg_hba needs an address with mask; a host name would be resolved on every connection."""
    addr = ipaddress.ip_address(host.strip("[]"))
    return f"{addr}/{addr.max_prefixlen}"


def render_hba(peer_host: str, tls: bool = True, db_name: str = "esc") -> str:
    """The local superuser by socket with ``peer`` authentication (the OS user the kernel
    reports must be in the ``esc`` map: :func:`render_ident`), the replication role from the
    peer only: streaming (``replication``) and pg_rewind's reads (database ``postgres``), over
    TLS with a certificate of the pair's CA (``clientcert=verify-ca``) and its password; the
    manager's role, by socket from the OS user of its name, to the application database only.
    No ``trust`` line: a local account that reaches the socket is still refused. ``tls`` False
    only for a node built without certificates (tests of the driver alone)."""
    peer = hba_address(peer_host)
    kind, cert = ("hostssl", " clientcert=verify-ca") if tls else ("host   ", "")
    return (
        "# Written by esc before every start; node-local (pg_basebackup and pg_rewind copy\n"
        "# this file from the peer, so it is never trusted as found).\n"
        "# TYPE  DATABASE     USER        ADDRESS  METHOD\n"
        f"local   all          {SUPERUSER}             peer map={IDENT_MAP}\n"
        f"local   {db_name:<12} {APP_ROLE}             peer\n"
        f"{kind} postgres     {REPL_ROLE}  {peer}  scram-sha-256{cert}\n"
        f"{kind} replication  {REPL_ROLE}  {peer}  scram-sha-256{cert}\n"
    )


def render_ident(os_users: Sequence[str]) -> str:
    """pg_ident.conf: the OS users that connect as the superuser over the socket. ``root``
    (the agent and escadm; esc-manager has its own role, :func:`render_hba`) and the server's
    own user (``runuser -u postgres -- psql``). Rewritten before every start, like pg_hba."""
    names: list[str] = []
    for name in os_users:
        if not re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}", name):
            raise ConfigError("os_user", f"{name!r} is not a plain user name")
        if name not in names:
            names.append(name)
    lines = "".join(f"{IDENT_MAP}  {n}  {SUPERUSER}\n" for n in names)
    return (
        "# Written by esc before every start (node-local, never trusted as copied).\n"
        "# MAPNAME  SYSTEM-USERNAME  PG-USERNAME\n" + lines
    )


def render_shared_conf(
    node_a: str, node_b: str, *, replicated: bool = True, slot_keep_mb: int = 4096
) -> str:
    """The ESC-HA block of postgresql.conf, identical on both nodes (it is copied by clone and
    rewind). Node-specific settings are on the pg_ctl command line instead. ``replicated``
    False (``cinder`` mode: one cluster on a shared volume) commits without a standby."""
    sync_names = pair_sync_names(node_a, node_b) if replicated else ""
    settings = [
        ("wal_level", "replica"),
        ("wal_log_hints", "on"),  # pg_rewind needs hint-bit WAL (checksums are on as well)
        ("full_page_writes", "on"),
        ("max_wal_senders", "10"),
        ("max_replication_slots", "10"),
        ("wal_keep_size", "'256MB'"),
        # A standby gone for long keeps WAL in its slot; past this much the slot is given up
        # (the primary's disk matters more) and that standby must be re-cloned.
        ("max_slot_wal_keep_size", f"'{slot_keep_mb}MB'"),
        ("hot_standby", "on"),
        ("hot_standby_feedback", "on"),
        ("synchronous_commit", "on"),
        ("synchronous_standby_names", conf_quote(sync_names)),
        ("password_encryption", "'scram-sha-256'"),
        # Failover in seconds: a dead peer is noticed in 5 s by walsender/walreceiver (and a
        # fast shutdown never waits longer than that for a vanished standby), and a standby
        # retries its primary every second instead of every 5 s.
        ("wal_sender_timeout", "'5s'"),
        ("wal_receiver_timeout", "'5s'"),
        ("wal_receiver_status_interval", "'1s'"),
        ("wal_retrieve_retry_interval", "'1s'"),
        ("log_line_prefix", "'%m [%p] %q%u@%d '"),
    ]
    body = "\n".join(f"{name} = {value}" for name, value in settings)
    return f"{CONF_BEGIN}\n{body}\n{CONF_END}\n"


def merge_conf_block(existing: str, block: str) -> str:
    """Replace the ESC-HA block in ``existing`` (or append it): re-running init is idempotent."""
    start = existing.find(CONF_BEGIN)
    end = existing.find(CONF_END)
    if start >= 0 and end > start:
        tail = existing[end + len(CONF_END) :].lstrip("\n")
        return existing[:start] + block + tail
    sep = "" if existing.endswith("\n") or not existing else "\n"
    return existing + sep + "\n" + block


def render_standby_auto_conf(primary_conninfo: str, slot: str) -> str:
    """The whole postgresql.auto.conf of a standby: nothing from a previous life survives
    (a copied ``primary_conninfo`` would point the node at itself, gotcha 6)."""
    return (
        "# Do not edit this file manually!\n"
        "# It will be overwritten by the ALTER SYSTEM command.\n"
        "# Rewritten by esc when this node became a standby.\n"
        f"primary_conninfo = {conf_quote(primary_conninfo)}\n"
        f"primary_slot_name = {conf_quote(slot)}\n"
    )


def server_options(
    node_name: str,
    port: int,
    socket_dir: Path,
    listen: str,
    tls_dir: Path | None = None,
    app_group: str | None = None,
) -> str:
    """The ``pg_ctl -o`` string. pg_ctl hands it to ``/bin/sh``, so every token is shell-quoted.
    ``tls_dir``: the server's copies of the pair CA, this node's certificate and key (node-local
    paths, so on the command line and never in the shared, copied postgresql.conf)."""
    pairs = [
        f"cluster_name={node_name}",  # becomes the walreceiver's application_name
        f"port={port}",
        f"unix_socket_directories={socket_dir}",  # own dir: a shared one collides (gotcha 1)
        # The directory (0700, or 2750 for the manager's group: setgid, so the socket gets
        # that group without postgres being in it) keeps other local users out; the socket
        # itself 0700, or 0770 for that group.
        f"unix_socket_permissions={'0770' if app_group else '0700'}",
        f"listen_addresses={listen}",
    ]
    if tls_dir is not None:
        pairs += [
            "ssl=on",
            f"ssl_ca_file={tls_dir / 'ca.crt'}",
            f"ssl_cert_file={tls_dir / 'host.crt'}",
            f"ssl_key_file={tls_dir / 'host.key'}",
            "ssl_min_protocol_version=TLSv1.3",
        ]
    return " ".join(f"-c {shlex.quote(p)}" for p in pairs)
