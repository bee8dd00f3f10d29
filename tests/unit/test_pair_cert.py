"""The northbound certificate of the pair (signed by the pair CA for the VIP, the anycast address
and both nodes), its rotation, and its live reload into running listeners (openssl and the ssl
module; no daemon, no network)."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

import pytest

from esc import pki
from esc.cli.cert_cmd import rotate
from esc.config.schema import EscConfig, NodePaths, parse_config
from esc.errors import ConfigError
from esc.manager.tls import CertWatch, ensure_certificate, pair_addresses

HA = {"ha_node_list": ["192.0.2.10", "192.0.2.11"], "kad_vip": "192.0.2.100", "kad_vif": "eth0"}
BGP = {
    "local_ip": "192.0.2.10",
    "anycast_ip": "203.0.113.1",
    "remote_ip": "192.0.2.1",
    "local_as": 65010,
    "remote_as": 65001,
    "local_router_id": "192.0.2.10",
}


def cfg(bgp: bool = True) -> EscConfig:
    return parse_config({"ha": HA, **({"bgp": BGP} if bgp else {})})


def names(cert: Path) -> str:
    out = subprocess.run(
        ["openssl", "x509", "-noout", "-ext", "subjectAltName", "-in", str(cert)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return out.split("\n", 1)[1].strip()


def test_the_api_certificate_names_every_address_a_client_may_dial(tmp_path: Path) -> None:
    paths = NodePaths(tmp_path)
    c = cfg()
    assert pair_addresses(c) == ["192.0.2.100", "203.0.113.1", "192.0.2.10", "192.0.2.11"]
    # without the pair CA: the self-signed fallback of a lone controller
    cert, _ = ensure_certificate(paths, c.manager, c)
    assert cert == paths.etc_dir / "manager.crt"
    pki.ensure_node(paths.pki_dir, "esc-ha-0", ["192.0.2.10"], make_ca=True)
    cert, key = ensure_certificate(paths, c.manager, c)
    assert (cert, key) == (paths.pki_dir / "api.crt", paths.pki_dir / "api.key")
    assert names(cert) == (
        "DNS:api, DNS:esc-ha-0, DNS:esc-ha-1, IP Address:192.0.2.100, IP Address:203.0.113.1, "
        "IP Address:192.0.2.10, IP Address:192.0.2.11"
    )
    first = cert.read_bytes()
    assert ensure_certificate(paths, c.manager, c)[0].read_bytes() == first  # kept when valid
    # the anycast address goes away: the certificate is reissued for what is left
    ensure_certificate(paths, cfg(bgp=False).manager, cfg(bgp=False))
    assert "203.0.113.1" not in names(cert) and cert.read_bytes() != first
    # the operator's own certificate wins
    own = c.manager.model_copy(
        update={"cert_file": str(tmp_path / "o.crt"), "key_file": str(tmp_path / "o.key")}
    )
    assert ensure_certificate(paths, own, c)[0] == tmp_path / "o.crt"


def test_rotate_issues_both_certificates_anew_from_the_pair_ca(tmp_path: Path) -> None:
    paths = NodePaths(tmp_path)
    c = cfg()
    with pytest.raises(ConfigError, match=r"ca\.key") as exc:
        rotate(c, paths, "192.0.2.10", "esc-ha-0")
    assert exc.value.field == "pki"
    pki.ensure_node(paths.pki_dir, "esc-ha-0", ["192.0.2.10"], make_ca=True)
    ensure_certificate(paths, c.manager, c)
    d = paths.pki_dir
    before = {f: (d / f).read_bytes() for f in ("host.crt", "host.key", "api.crt", "api.key")}
    assert rotate(c, paths, "192.0.2.10", "esc-ha-0") == [str(d / "host.crt"), str(d / "api.crt")]
    for f, old in before.items():
        assert (d / f).read_bytes() != old, f
    assert pki.cert_matches(d / "ca.crt", d / "host.crt", ["192.0.2.10"])
    assert pki.cert_matches(d / "ca.crt", d / "api.crt", pair_addresses(c))


def test_a_replaced_certificate_is_loaded_into_the_running_contexts(tmp_path: Path) -> None:
    d = tmp_path / "pki"
    api = pki.ensure_node(d, "esc-ha-0", ["192.0.2.10"], make_ca=True)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(api.cert), str(api.key))
    loaded: list[ssl.SSLContext] = []

    class Spy(ssl.SSLContext):  # records each reload, then loads for real
        def load_cert_chain(self, *a: object, **k: object) -> None:
            loaded.append(self)
            super().load_cert_chain(*a, **k)  # type: ignore[arg-type]

    spy = Spy(ssl.PROTOCOL_TLS_SERVER)
    watch = CertWatch(api.cert, api.key, lambda: [spy])
    assert not watch.check()  # unchanged
    pki.issue_into(d, "host", ["192.0.2.10"], cn="esc-ha-0")
    assert watch.check() and watch.reloads == 1 and loaded == [spy]
    assert not watch.check()
    api.key.write_text("garbage\n")  # a broken key: kept serving the old one, not reloaded
    assert not watch.check() and watch.reloads == 1
