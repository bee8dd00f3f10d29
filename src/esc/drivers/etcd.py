"""etcd for quorum mode (issue 14, part B): one member per node and one on a witness host.

Two parts, both small:

- :func:`member_argv` renders the command line of this node's member (Debian's etcd-server
  3.4): TLS on both its links, each end authenticated against the pair's CA only
  (``esc.pki``), data under the given directory. :class:`EtcdMember` runs it as a supervised
  child of the agent (``esc.drivers.proc.Child``: it dies with the agent).
- :class:`EtcdClient` speaks etcd's v3 JSON gateway (``/v3/...``) over HTTPS with the node's
  client certificate: leases (grant, keep-alive, revoke) and compare-and-swap on keys. Every
  read is linearizable (etcd's default): a member cut off from the quorum answers nothing, and
  the client gives up after ``timeout`` and tries the next endpoint. No member answering in
  time is a :class:`QuorumError`, never a stale answer.

The leases and keys are kept by ``esc.drivers.quorum``; the rules that use them are
``esc.core.quorum``'s.
"""

from __future__ import annotations

import base64
import http.client
import ipaddress
import json
import logging
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from esc.addresses import url_host
from esc.drivers.proc import Child
from esc.errors import ConfigError, QuorumError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Member:
    name: str
    address: str
    client_port: int = 2379
    peer_port: int = 2380

    def __post_init__(self) -> None:
        try:
            ipaddress.ip_address(self.address)  # before it is rendered into a flag
        except ValueError:
            raise ConfigError("address", f"{self.address!r} is not an IP address") from None
        if not self.name.replace("-", "").replace("_", "").isalnum():
            raise ConfigError("name", f"{self.name!r}: letters, digits, - and _ only")

    @property
    def peer_url(self) -> str:
        return f"https://{url_host(self.address)}:{self.peer_port}"

    @property
    def client_url(self) -> str:
        return f"https://{url_host(self.address)}:{self.client_port}"


@dataclass(frozen=True)
class Tls:
    """The pair CA's certificate, and this host's certificate and key (esc.pki)."""

    ca: Path
    cert: Path
    key: Path


@dataclass(frozen=True)
class Timing:
    """etcd's raft timing. The election timeout bounds how long the quorum needs to replace a
    dead etcd leader; both in milliseconds (etcd's defaults are 100 and 1000)."""

    heartbeat_ms: int = 100
    election_ms: int = 1000


def member_argv(
    me: Member,
    cluster: Sequence[Member],
    data_dir: Path,
    tls: Tls,
    token: str,
    timing: Timing = Timing(),
    binary: str = "etcd",
) -> list[str]:
    """The command line of ``me``, a member of ``cluster`` (which includes it)."""
    names = [m.name for m in cluster]
    if me not in cluster:
        raise ConfigError("members", f"{me.name} is not one of {', '.join(names)}")
    if len(set(names)) != len(names):
        raise ConfigError("members", f"member names repeat: {', '.join(names)}")
    if len(cluster) % 2 == 0:
        raise ConfigError("members", f"{len(cluster)} members: an odd number has a majority")
    return [
        binary,
        f"--name={me.name}",
        f"--data-dir={data_dir}",
        f"--listen-peer-urls={me.peer_url}",
        f"--initial-advertise-peer-urls={me.peer_url}",
        f"--listen-client-urls={me.client_url}",
        f"--advertise-client-urls={me.client_url}",
        "--initial-cluster=" + ",".join(f"{m.name}={m.peer_url}" for m in cluster),
        f"--initial-cluster-token={token}",
        "--initial-cluster-state=new",
        f"--heartbeat-interval={timing.heartbeat_ms}",
        f"--election-timeout={timing.election_ms}",
        # A member cut off from the leader (a node partitioned from its peer, still reaching
        # the witness) must not call elections at ever higher terms that depose a leader the
        # majority still hears: Raft's pre-vote (default only from etcd 3.5).
        "--pre-vote=true",
        # The holder writes the leader key 8 times a lease (4 a second at the defaults): keep
        # only the last 1000 revisions, or the history fills etcd's 2 GiB quota in weeks and
        # every write, renewals first, is refused (NOSPACE).
        "--auto-compaction-mode=revision",
        "--auto-compaction-retention=1000",
        f"--cert-file={tls.cert}",
        f"--key-file={tls.key}",
        f"--trusted-ca-file={tls.ca}",
        "--client-cert-auth=true",
        f"--peer-cert-file={tls.cert}",
        f"--peer-key-file={tls.key}",
        f"--peer-trusted-ca-file={tls.ca}",
        "--peer-client-cert-auth=true",
        "--logger=zap",
        "--log-outputs=stderr",
    ]


class EtcdMember:
    """This node's member, a child of the agent (logs to ``log_file``)."""

    def __init__(self, argv: Sequence[str], data_dir: Path, log_file: Path) -> None:
        self.data_dir = data_dir
        self.child = Child("etcd", argv, log_file)

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.data_dir.chmod(0o700)  # etcd refuses a data directory others can read
        self.child.start()

    def stop(self) -> None:
        self.child.stop()

    def is_alive(self) -> bool:
        return self.child.is_alive()

    def ensure_running(self) -> None:
        """Start it again if it died (called every agent cycle; etcd rejoins with its data)."""
        if self.child.starts and not self.child.is_alive():
            log.warning("etcd member exited; starting it again (see %s)", self.child.log_file)
            self.start()


@dataclass(frozen=True)
class Kv:
    key: str
    value: str
    create_revision: int
    mod_revision: int
    lease: int = 0


@dataclass(frozen=True)
class Renewal:
    """A keep-alive's answer: ``ttl`` seconds left, counted from ``sent`` (monotonic, taken
    before the request left: the lease cannot outlive sent + ttl as this node sees it)."""

    ttl: int
    sent: float

    @property
    def expires(self) -> float:
        return self.sent + self.ttl


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _unb64(text: str) -> str:
    return base64.b64decode(text).decode()


def _unchanged(key: str, mod_revision: int) -> dict[str, str]:
    """A txn compare: the key was last modified at ``mod_revision``."""
    return {"key": _b64(key), "result": "EQUAL", "target": "MOD", "mod_revision": str(mod_revision)}


def _int(data: dict[str, Any], key: str) -> int:
    """etcd's JSON gateway spells int64 as strings and leaves out zero values."""
    try:
        return int(data.get(key, 0))
    except (TypeError, ValueError):
        raise QuorumError(f"etcd answered {key}={data.get(key)!r}, not a number") from None


def _kv(data: dict[str, Any]) -> Kv:
    try:
        return Kv(
            _unb64(data["key"]),
            _unb64(data.get("value", "")),
            _int(data, "create_revision"),
            _int(data, "mod_revision"),
            _int(data, "lease"),
        )
    except (KeyError, ValueError, UnicodeDecodeError) as exc:
        raise QuorumError(f"etcd answered a malformed key-value: {exc}") from None


class EtcdClient:
    """etcd's v3 JSON API over mutual TLS. One kept connection to the endpoint that last
    answered; on a failure the next endpoint, each given ``timeout`` seconds."""

    def __init__(self, endpoints: Sequence[str], tls: Tls, timeout: float = 1.0) -> None:
        if not endpoints:
            raise ConfigError("endpoints", "at least one etcd endpoint")
        self.endpoints = list(endpoints)
        self.timeout = timeout
        self._ctx = ssl.create_default_context(cafile=str(tls.ca))
        self._ctx.load_cert_chain(str(tls.cert), str(tls.key))
        self._current = 0
        self._conn: http.client.HTTPSConnection | None = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _connect(self, endpoint: str) -> http.client.HTTPSConnection:
        parts = urlsplit(endpoint)
        return http.client.HTTPSConnection(
            parts.hostname or "", parts.port or 2379, timeout=self.timeout, context=self._ctx
        )

    def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST ``/v3/<path>``: the first endpoint to answer, starting with the last good one."""
        errors: list[str] = []
        start = self._current  # (moves as endpoints are tried: each is tried once, in turn)
        for i in range(len(self.endpoints)):
            k = (start + i) % len(self.endpoints)
            endpoint = self.endpoints[k]
            try:
                if self._conn is None or k != self._current:
                    self.close()
                    self._conn = self._connect(endpoint)
                    self._current = k
                self._conn.request(
                    "POST", f"/v3/{path}", json.dumps(body), {"Content-Type": "application/json"}
                )
                resp = self._conn.getresponse()
                raw = resp.read()
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                errors.append(f"{endpoint}: {exc or type(exc).__name__}")
                continue
            try:
                data = json.loads(raw)
            except ValueError:
                data = None
            if not isinstance(data, dict):
                self.close()
                errors.append(f"{endpoint}: HTTP {resp.status}, not a JSON object")
                continue
            if resp.status != 200 or "error" in data or data.get("code"):
                # etcd's own refusal (no leader, request timed out, lease not found, ...):
                # another member may have the quorum this one lost.
                self.close()
                errors.append(f"{endpoint}: {data.get('message') or data.get('error') or data}")
                continue
            return data
        raise QuorumError(f"etcd {path}: no member answered: {'; '.join(errors)}")

    # --- leases -----------------------------------------------------------------------------

    def grant(self, ttl: int) -> tuple[int, Renewal]:
        """A new lease of ``ttl`` seconds: its id, and until when it holds."""
        sent = time.monotonic()
        data = self.call("lease/grant", {"TTL": ttl})
        return _int(data, "ID"), Renewal(_int(data, "TTL"), sent)

    def keepalive(self, lease: int) -> Renewal:
        """Renew ``lease``; ttl 0 means it is gone (expired or revoked)."""
        sent = time.monotonic()
        data = self.call("lease/keepalive", {"ID": str(lease)})
        result = data.get("result")
        if not isinstance(result, dict):
            raise QuorumError(f"etcd lease/keepalive: no result in {data}")
        return Renewal(_int(result, "TTL"), sent)

    def revoke(self, lease: int) -> None:
        self.call("lease/revoke", {"ID": str(lease)})

    # --- keys -------------------------------------------------------------------------------

    def get(self, key: str) -> Kv | None:
        data = self.call("kv/range", {"key": _b64(key)})
        kvs = data.get("kvs") or []
        return _kv(kvs[0]) if kvs else None

    def swap(
        self,
        key: str,
        value: str,
        mod_revision: int,
        lease: int = 0,
        while_held: tuple[str, int] | None = None,
    ) -> tuple[bool, Kv | None]:
        """Write ``value`` only if the key is unchanged since ``mod_revision`` (0: only if it
        does not exist) and, with ``while_held = (key2, lease2)``, only while ``key2`` is
        attached to ``lease2`` (its holder still holds it). (True, None) when written; (False,
        what is there now) otherwise."""
        compare = [
            {"key": _b64(key), "result": "EQUAL", "target": "CREATE", "create_revision": "0"}
            if mod_revision == 0
            else _unchanged(key, mod_revision)
        ]
        if while_held is not None:
            held_key, held_lease = while_held
            compare.append(
                {"key": _b64(held_key), "result": "EQUAL", "target": "LEASE",
                 "lease": str(held_lease)}
            )  # fmt: skip
        put: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
        if lease:
            put["lease"] = str(lease)
        data = self.call(
            "kv/txn",
            {
                "compare": compare,
                "success": [{"request_put": put}],
                "failure": [{"request_range": {"key": _b64(key)}}],
            },
        )
        if data.get("succeeded"):
            return True, None
        for r in data.get("responses") or []:
            kvs = (r.get("response_range") or {}).get("kvs") or []
            if kvs:
                return False, _kv(kvs[0])
        return False, None

    def refresh(self, key: str, value: str, lease: int) -> bool:
        """Write ``key`` again (a new mod revision others can see) only while it is attached
        to ``lease``: a holder's renewal. False when the key is gone or on another lease."""
        data = self.call(
            "kv/txn",
            {
                "compare": [
                    {"key": _b64(key), "result": "EQUAL", "target": "LEASE", "lease": str(lease)}
                ],
                "success": [
                    {"request_put": {"key": _b64(key), "value": _b64(value), "lease": str(lease)}}
                ],
            },
        )
        return bool(data.get("succeeded"))

    def delete(self, key: str, mod_revision: int) -> bool:
        """Delete the key only if unchanged since ``mod_revision``."""
        data = self.call(
            "kv/txn",
            {
                "compare": [_unchanged(key, mod_revision)],
                "success": [{"request_delete_range": {"key": _b64(key)}}],
            },
        )
        return bool(data.get("succeeded"))
