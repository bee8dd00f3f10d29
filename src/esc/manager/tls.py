"""The northbound certificate: configured paths, or a self-signed one generated at first start."""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

from esc.config.schema import ManagerConfig, NodePaths
from esc.drivers.proc import run

log = logging.getLogger(__name__)


def cert_paths(paths: NodePaths, cfg: ManagerConfig) -> tuple[Path, Path]:
    cert = Path(cfg.cert_file) if cfg.cert_file else paths.etc_dir / "manager.crt"
    key = Path(cfg.key_file) if cfg.key_file else paths.etc_dir / "manager.key"
    return cert, key


def ensure_certificate(paths: NodePaths, cfg: ManagerConfig) -> tuple[Path, Path]:
    """Return (cert, key); generate a self-signed EC certificate if either is missing."""
    cert, key = cert_paths(paths, cfg)
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
