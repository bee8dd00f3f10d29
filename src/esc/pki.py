"""The pair's own certificate authority: one CA, and a certificate per member it signs.

Used for etcd (members and clients authenticate each other, both ways, against the pair's CA
only: ``--client-cert-auth``, ``--peer-client-cert-auth``). Keys are EC P-256, written 0600 and
never readable by others, not even for an instant (umask 077 while openssl runs). Every
certificate is for both ends of a TLS link (serverAuth and clientAuth) and names its host's
addresses in its subjectAltName, which is what the peer checks.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from esc.drivers.proc import run
from esc.errors import ConfigError
from esc.files import write_atomic

CA_DAYS = 3650
CERT_DAYS = 3650
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


@dataclass(frozen=True)
class Issued:
    cert: Path
    key: Path


def _umask_run(argv: Sequence[str], input_: str | None = None) -> None:
    old = os.umask(0o077)
    try:
        run(argv, input_=input_)
    finally:
        os.umask(old)


def create_ca(directory: Path, name: str = "esc-ha pair CA") -> Issued:
    """``ca.crt`` and ``ca.key`` in ``directory``; an existing pair is kept (idempotent)."""
    cert, key = directory / "ca.crt", directory / "ca.key"
    if cert.exists() and key.exists():
        return Issued(cert, key)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    _umask_run([
        "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-days", str(CA_DAYS), "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-keyout", str(key), "-out", str(cert),
    ])  # fmt: skip
    os.chmod(cert, 0o644)
    return Issued(cert, key)


def san(ips: Sequence[str], dns: Sequence[str] = ()) -> str:
    """The subjectAltName value; every address is checked (ValueError naming it)."""
    parts = [f"DNS:{d}" for d in dns]
    for ip in ips:
        parts.append(f"IP:{ipaddress.ip_address(ip)}")
    if not parts:
        raise ValueError("a certificate needs at least one address or name")
    return ",".join(parts)


def issue(
    ca: Issued, directory: Path, name: str, ips: Sequence[str], dns: Sequence[str] = ()
) -> Issued:
    """``<name>.crt``/``<name>.key`` signed by ``ca`` for ``ips`` (replaced if present)."""
    if not _NAME.match(name):
        raise ConfigError("name", f"{name!r} is not a certificate name (letters, digits, ._-)")
    alt = san(ips, dns=[name, *dns])
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    cert, key, csr = (directory / f"{name}{ext}" for ext in (".crt", ".key", ".csr"))
    ext = directory / f"{name}.ext"
    ext.write_text(
        f"subjectAltName={alt}\n"
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth,clientAuth\n"
    )
    try:
        _umask_run([
            "openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-subj", f"/CN={name}", "-keyout", str(key), "-out", str(csr),
        ])  # fmt: skip
        _umask_run([
            "openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca.cert), "-CAkey",
            str(ca.key), "-CAcreateserial", "-days", str(CERT_DAYS), "-extfile", str(ext),
            "-out", str(cert),
        ])  # fmt: skip
    finally:
        csr.unlink(missing_ok=True)
        ext.unlink(missing_ok=True)
    os.chmod(cert, 0o644)
    return Issued(cert, key)


# --- quorum mode: the pair's certificates, made once, installed on each host -------------------

HOST_FILES = ("ca.crt", "host.crt", "host.key")  # in <etc>/pki on each host


def install_files(ca_cert: Path, cert: Path, key: Path, pki_dir: Path) -> None:
    """The CA's certificate and a host's certificate and key into ``pki_dir`` (0700; the key
    0600), each replaced atomically (never through a symlink)."""
    pki_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(pki_dir, 0o700)
    files = ((ca_cert, "ca.crt", 0o644), (cert, "host.crt", 0o644), (key, "host.key", 0o600))
    for src, name, mode in files:
        write_atomic(pki_dir / name, src.read_bytes(), mode)


def create_pair(out: Path, hosts: Mapping[str, Sequence[str]]) -> dict[str, Path]:
    """The pair CA in ``out/ca`` (its key stays there: keep it with the operator) and, for each
    host, ``out/<host>/`` with that host's ``HOST_FILES``, for ``install_host`` on it."""
    ca = create_ca(out / "ca")
    made: dict[str, Path] = {}
    for name, ips in hosts.items():
        issued = issue(ca, out / "issued", name, ips)
        install_files(ca.cert, issued.cert, issued.key, out / name)
        made[name] = out / name
    return made


def install_host(src: Path, pki_dir: Path) -> None:
    """Install a host's files made by ``create_pair`` (a ConfigError naming a missing one;
    nothing is changed then)."""
    for name in HOST_FILES:
        if not (src / name).is_file():
            raise ConfigError("pki", f"{src / name} missing (made by `escadm ha pki create`)")
    install_files(src / "ca.crt", src / "host.crt", src / "host.key", pki_dir)
    (pki_dir / "ca.key").unlink(missing_ok=True)  # another CA's (two-node mode's): stale now


# --- two-node mode: the pair CA made at pairing, each node issuing its own certificate -------


def cert_matches(ca_cert: Path, cert: Path, ips: Sequence[str], *, exact: bool = False) -> bool:
    """``cert`` is signed by ``ca_cert``, still valid for a day, and names every one of ``ips``
    in its subjectAltName (what a peer checking ``verify-full`` needs); ``exact``: those and no
    other address (a certificate the node issues itself, reissued when its addresses change)."""
    if not cert.is_file() or not ca_cert.is_file():
        return False
    ok = run(["openssl", "verify", "-CAfile", str(ca_cert), str(cert)], check=False)
    if ok.returncode != 0:
        return False
    text = run(
        ["openssl", "x509", "-in", str(cert), "-noout", "-checkend", "86400", "-ext",
         "subjectAltName"],
        check=False,
    )  # fmt: skip
    if text.returncode != 0:
        return False
    parts = text.stdout.replace("\n", ",").split(",")
    # openssl prints IPv6 expanded and in capitals: compare parsed addresses
    named = {
        ipaddress.ip_address(p.strip()[len("IP Address:") :])
        for p in parts
        if p.strip().startswith("IP Address:")
    }
    wanted = {ipaddress.ip_address(ip) for ip in ips}
    return named == wanted if exact else wanted <= named


def ensure_node(pki_dir: Path, name: str, ips: Sequence[str], *, make_ca: bool) -> Issued:
    """This node's ``host.crt``/``host.key`` in ``pki_dir``, valid against its ``ca.crt`` for
    ``ips``. Two-node mode (``make_ca``): a node with no CA yet makes the pair CA here (its key
    in ``pki_dir/ca.key``, 0600: `escadm ha secrets export` gives both to the peer), and a node
    holding the CA's key issues its own certificate whenever it is missing, stale or for other
    addresses. Without the CA's key (quorum mode: it stays with the operator) a missing or wrong
    certificate is a ConfigError naming it, and nothing is changed."""
    ca = Issued(pki_dir / "ca.crt", pki_dir / "ca.key")
    host = Issued(pki_dir / "host.crt", pki_dir / "host.key")
    if make_ca and not ca.cert.exists():
        create_ca(pki_dir)
    if cert_matches(ca.cert, host.cert, ips) and host.key.is_file():
        return host
    if not ca.cert.is_file() or not ca.key.is_file():
        what = "missing" if not host.cert.is_file() else "not valid for this node"
        raise ConfigError(
            "pki",
            f"{host.cert} {what} ({', '.join(ips)}): install this host's certificates "
            "(`escadm ha pki create`, then `escadm ha pki install`)",
        )
    return issue_into(pki_dir, "host", ips, cn=name)


def issue_into(
    pki_dir: Path, stem: str, ips: Sequence[str], *, cn: str | None = None, dns: Sequence[str] = ()
) -> Issued:
    """``<stem>.crt``/``<stem>.key`` in ``pki_dir`` issued by its CA (``ca.crt``, ``ca.key``) for
    ``ips``, named ``cn`` (default ``stem``); each file replaced atomically, the key 0600."""
    ca = Issued(pki_dir / "ca.crt", pki_dir / "ca.key")
    staging = pki_dir / "issuing"
    try:
        issued = issue(ca, staging, cn or stem, ips, dns=dns)
        write_atomic(pki_dir / f"{stem}.key", issued.key.read_bytes(), 0o600)
        write_atomic(pki_dir / f"{stem}.crt", issued.cert.read_bytes(), 0o644)
    finally:
        for f in staging.glob("*"):
            f.unlink()
        if staging.exists():
            staging.rmdir()
        (pki_dir / "ca.srl").unlink(missing_ok=True)
    return Issued(pki_dir / f"{stem}.crt", pki_dir / f"{stem}.key")


def read_ca(pki_dir: Path) -> tuple[str, str] | None:
    """The pair CA's certificate and key (PEM), when this node holds the key."""
    cert, key = pki_dir / "ca.crt", pki_dir / "ca.key"
    if not cert.is_file() or not key.is_file():
        return None
    return cert.read_text(), key.read_text()


_B64 = r"[A-Za-z0-9+/=\n]+"
_PEM_CERT = re.compile(rf"\A-----BEGIN CERTIFICATE-----\n{_B64}-----END CERTIFICATE-----\n\Z")
_PEM_KEY = re.compile(rf"\A-----BEGIN PRIVATE KEY-----\n{_B64}-----END PRIVATE KEY-----\n\Z")


def check_ca_pem(cert_pem: str, key_pem: str) -> None:
    if not _PEM_CERT.match(cert_pem):
        raise ConfigError("secrets.ca_crt", "not one PEM certificate")
    if not _PEM_KEY.match(key_pem):
        raise ConfigError("secrets.ca_key", "not one PEM private key")


def install_ca(pki_dir: Path, cert_pem: str, key_pem: str) -> bool:
    """The peer's pair CA (from `escadm ha secrets export`) here; this node's own certificate
    is removed when the CA changes (the agent issues a new one at its start). True if changed.
    A malformed PEM is a ConfigError naming it, and nothing is changed."""
    check_ca_pem(cert_pem, key_pem)
    if read_ca(pki_dir) == (cert_pem, key_pem):
        return False
    pki_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(pki_dir, 0o700)
    write_atomic(pki_dir / "ca.key", key_pem.encode(), 0o600)
    write_atomic(pki_dir / "ca.crt", cert_pem.encode(), 0o644)
    for stale in ("host.crt", "host.key"):
        (pki_dir / stale).unlink(missing_ok=True)
    return True
