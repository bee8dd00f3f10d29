"""etcd's member command line and the pair CA's subjectAltName: pure renders, refused inputs."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest

from esc import pki
from esc.drivers.etcd import EtcdClient, Member, Renewal, Timing, Tls, member_argv
from esc.errors import ConfigError, QuorumError
from esc.pki import san

TLS = Tls(Path("/e/ca.crt"), Path("/e/node.crt"), Path("/e/node.key"))
A = Member("esc-ha-0", "192.0.2.10")
B = Member("esc-ha-1", "192.0.2.11")
W = Member("witness", "2001:db8::30")


def test_a_member_listens_with_mutual_tls_on_its_own_addresses() -> None:
    argv = member_argv(W, [A, B, W], Path("/var/lib/esc/etcd"), TLS, "pair-1", Timing(50, 500))
    flags = dict(a.split("=", 1) for a in argv[1:])
    assert flags["--listen-peer-urls"] == "https://[2001:db8::30]:2380"
    assert flags["--listen-client-urls"] == "https://[2001:db8::30]:2379"
    assert flags["--initial-cluster"] == (
        "esc-ha-0=https://192.0.2.10:2380,esc-ha-1=https://192.0.2.11:2380,"
        "witness=https://[2001:db8::30]:2380"
    )
    assert flags["--client-cert-auth"] == flags["--peer-client-cert-auth"] == "true"
    assert flags["--trusted-ca-file"] == flags["--peer-trusted-ca-file"] == "/e/ca.crt"
    assert (flags["--heartbeat-interval"], flags["--election-timeout"]) == ("50", "500")
    assert flags["--data-dir"] == "/var/lib/esc/etcd"
    assert not any(a.startswith("http://") for a in flags.values())
    # the leader key is written 8 times a lease: its history is compacted
    assert flags["--auto-compaction-mode"] == "revision"
    assert int(flags["--auto-compaction-retention"]) > 0


@pytest.mark.parametrize(
    ("me", "cluster", "says"),
    [
        (A, [A, B], "an odd number"),  # two members: losing either loses the quorum
        (W, [A, B, Member("esc-ha-2", "192.0.2.12")], "witness is not one of"),
        (A, [A, Member("esc-ha-0", "192.0.2.11"), W], "member names repeat"),
    ],
)
def test_a_cluster_without_a_majority_or_without_this_member_is_refused(
    me: Member, cluster: list[Member], says: str
) -> None:
    with pytest.raises(ConfigError, match=says) as exc:
        member_argv(me, cluster, Path("/d"), TLS, "t")
    assert exc.value.field == "members"


def test_a_member_name_or_address_that_would_end_up_in_a_flag_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"'192\.0\.2\.300' is not an IP") as bad:
        Member("esc-ha-0", "192.0.2.300")
    assert bad.value.field == "address"
    with pytest.raises(ConfigError, match="letters, digits") as exc:
        Member("a,b=https://x", "192.0.2.10")
    assert exc.value.field == "name"


def test_a_renewal_expires_counted_from_before_it_was_sent() -> None:
    assert Renewal(ttl=5, sent=100.25).expires == 105.25


def test_san_names_each_address_and_refuses_a_bad_one() -> None:
    assert san(["192.0.2.10", "2001:db8::1"], ["esc-ha-0"]) == (
        "DNS:esc-ha-0,IP:192.0.2.10,IP:2001:db8::1"
    )
    with pytest.raises(ValueError, match="not-an-ip"):
        san(["not-an-ip"])
    with pytest.raises(ValueError, match="at least one"):
        san([])


def test_a_call_tries_each_member_once_in_turn_from_the_last_good_one(tmp_path: Path) -> None:
    """(Seen in the lab: with its own member leaderless and its peer cut off, the keeper tried
    its own member again instead of the witness, and the primary lost its key in a node|node
    partition.) Three endpoints that refuse connections, tried from the one that last answered:
    each once, in turn."""
    ca = pki.create_ca(tmp_path / "ca")
    issued = pki.issue(ca, tmp_path, "esc-ha-0", ["127.0.0.1"])
    socks = [socket.socket() for _ in range(3)]
    for s in socks:
        s.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
    try:
        urls = [f"https://127.0.0.1:{s.getsockname()[1]}" for s in socks]
        client = EtcdClient(urls, Tls(ca.cert, issued.cert, issued.key), timeout=0.5)
        for start in (0, 1, 2):
            client._current = start
            with pytest.raises(QuorumError) as exc:
                client.get("/esc/leader")
            tried = re.findall(r"https://127\.0\.0\.1:\d+", str(exc.value))
            assert tried == [urls[(start + i) % 3] for i in range(3)], (start, tried)
    finally:
        for s in socks:
            s.close()
