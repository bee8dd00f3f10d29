"""Mutual TLS for the peer API, with the pair CA (``<etc>/pki``: ``ca.crt``, and this node's
``host.crt``/``host.key``, the same files replication uses).

Both ends present their host certificate and require the other's, signed by the pair CA; the
poller also checks that the peer's certificate names the address it dials (as replication's
``verify-full``). TLS 1.3 only. The HMAC challenge-response (``peerauth``) still runs inside:
TLS keeps the views private and refuses anything without the pair's certificate before a byte
of HTTP is read; the MAC binds each answer to its request and to the pair's secret.

The contexts are built again when a file changed (``escadm cert rotate`` replaces them): each
connection uses the certificate on disk, with no restart.
"""

from __future__ import annotations

import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path

from esc.files import stamp


@dataclass
class PeerTls:
    ca: Path
    cert: Path
    key: Path
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _made: dict[bool, tuple[tuple[int, ...] | None, ssl.SSLContext]] = field(
        default_factory=dict, repr=False
    )

    @classmethod
    def in_dir(cls, pki_dir: Path) -> PeerTls:
        return cls(pki_dir / "ca.crt", pki_dir / "host.crt", pki_dir / "host.key")

    def context(self, server: bool) -> ssl.SSLContext:
        """The server's or the client's context, built again if a file changed. Raises
        OSError/ssl.SSLError if the files are missing or do not match."""
        now = stamp(self.ca, self.cert, self.key)
        with self._lock:
            made = self._made.get(server)
            if made is not None and now is not None and made[0] == now:
                return made[1]
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.load_cert_chain(self.cert, self.key)
        ctx.load_verify_locations(cafile=self.ca)
        ctx.verify_mode = ssl.CERT_REQUIRED  # the server requires the client's certificate too
        if not server:
            ctx.check_hostname = True  # the peer's certificate names the address dialled
        with self._lock:
            self._made[server] = (now, ctx)
        return ctx
