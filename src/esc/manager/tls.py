"""The northbound certificate, by precedence:

1. the operator's own (``manager.cert_file``/``key_file``), used as it is;
2. the pair's: ``<etc>/pki/api.crt``, signed by the pair CA for every address a client may
   dial (the VIP, the anycast address, both node addresses), so it does not change meaning on
   a failover: a client that trusts ``<etc>/pki/ca.crt`` verifies either node under any of
   those names. A node holding the CA's key (two-node mode) issues it itself when it is missing,
   stale or for other addresses; in quorum mode `escadm ha pki create` makes it;
3. without the pair (``no_ha``), a self-signed one generated at first start.

:class:`CertWatch` reloads a replaced certificate into the running listeners (new handshakes
use it; `escadm cert rotate`), with no restart and no role change.
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from esc import pki
from esc.config.schema import EscConfig, ManagerConfig, NodePaths
from esc.drivers.proc import run
from esc.errors import ConfigError
from esc.files import stamp

log = logging.getLogger(__name__)


def cert_paths(paths: NodePaths, cfg: ManagerConfig) -> tuple[Path, Path]:
    cert = Path(cfg.cert_file) if cfg.cert_file else paths.etc_dir / "manager.crt"
    key = Path(cfg.key_file) if cfg.key_file else paths.etc_dir / "manager.key"
    return cert, key


def pair_addresses(cfg: EscConfig) -> list[str]:
    """Every address a client may reach the pair's API at: VIP, anycast, both nodes."""
    if cfg.ha is None or cfg.ha.ha_mode == "no_ha":
        return []
    addrs = [str(cfg.ha.kad_vip.address)]
    if cfg.bgp is not None:
        addrs.append(str(cfg.bgp.anycast_ip))
    addrs += [str(a) for a in cfg.ha.ha_node_list]
    return list(dict.fromkeys(addrs))


def pair_certificate(paths: NodePaths, cfg: EscConfig, *, renew: bool = False) -> pki.Issued | None:
    """The pair's northbound certificate in ``<etc>/pki`` (module docstring); None without the
    pair or without its CA. ``renew``: a new key and certificate even if the present ones are
    valid (needs the CA's key). A stale one with no CA key to renew it: ConfigError."""
    addrs = pair_addresses(cfg)
    d = paths.pki_dir
    if not addrs or not (d / "ca.crt").is_file():
        return None
    api = pki.Issued(d / "api.crt", d / "api.key")
    if (
        not renew
        and api.key.is_file()
        and pki.cert_matches(d / "ca.crt", api.cert, addrs, exact=True)
    ):
        return api
    if not (d / "ca.key").is_file():
        if renew or api.cert.exists():
            raise ConfigError(
                "pki", f"{api.cert} cannot be issued here without the CA's key (`escadm ha pki`)"
            )
        return None
    return pki.issue_into(d, "api", addrs, dns=[*cfg.ha.node_names] if cfg.ha else [])


def ensure_certificate(
    paths: NodePaths, cfg: ManagerConfig, whole: EscConfig | None = None
) -> tuple[Path, Path]:
    """Return (cert, key), by the module docstring's precedence."""
    cert, key = cert_paths(paths, cfg)
    if not cfg.cert_file and whole is not None:
        pair = pair_certificate(paths, whole)
        if pair is not None:
            return pair.cert, pair.key
    if cert.exists() and key.exists():
        return cert, key
    cert.parent.mkdir(parents=True, exist_ok=True)
    key.parent.mkdir(parents=True, exist_ok=True)
    host = socket.gethostname() or "esc"
    argv = [
        "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-days", "3650", "-subj", f"/CN={host}",
        "-addext", f"subjectAltName=DNS:{host},DNS:localhost,IP:127.0.0.1,IP:::1",
        "-keyout", str(key), "-out", str(cert),
    ]  # fmt: skip
    old = os.umask(0o077)  # the key is never readable by others, not even for an instant
    try:
        run(argv)
    finally:
        os.umask(old)
    os.chmod(cert, 0o644)
    log.info("generated a self-signed certificate %s (CN=%s)", cert, host)
    return cert, key


class CertWatch:
    """Reload ``cert``/``key`` into running listeners' SSL contexts when the files change
    (checked every ``every_s``). A bad pair of files is logged and the old one kept serving."""

    def __init__(
        self,
        cert: Path,
        key: Path,
        contexts: Callable[[], Sequence[ssl.SSLContext]],
        every_s: float = 2.0,
    ) -> None:
        self.cert, self.key, self.contexts, self.every_s = cert, key, contexts, every_s
        self._seen = stamp(cert, key)
        self._stop = threading.Event()
        self.reloads = 0

    def check(self) -> bool:
        """One look; True if the certificate was reloaded."""
        now = stamp(self.cert, self.key)
        if now is None or now == self._seen:
            return False
        try:
            for ctx in self.contexts():
                ctx.load_cert_chain(str(self.cert), str(self.key))
        except (OSError, ssl.SSLError) as exc:
            log.error("certificate %s not reloaded (the old one keeps serving): %s", self.cert, exc)
            return False
        finally:
            self._seen = now
        self.reloads += 1
        log.info("reloaded the certificate %s", self.cert)
        return True

    def run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.check()

    def start(self) -> threading.Thread:
        t = threading.Thread(target=self.run, name="cert-watch", daemon=True)
        t.start()
        return t

    def stop(self) -> None:
        self._stop.set()
