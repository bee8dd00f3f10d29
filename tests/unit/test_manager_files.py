"""What the agent (root) stages for esc-manager, which runs as the unprivileged escmanager: a
config copy without the pair's secrets, the certificate copies, the log, their owners and modes;
the portal's read-only socket handler; the setpriv options. Files under tmp_path only."""

from __future__ import annotations

import os
import pwd
import stat
from pathlib import Path
from typing import Any

import pytest
from test_pair_cert import BGP, HA

from esc import pki
from esc.accounts import Account, setpriv_drop
from esc.agent.local_api import read_only
from esc.agent.manager_files import (
    LAB_VIM_CAPS,
    TlsCopy,
    redacted,
    setpriv_options,
    stage,
)
from esc.agent.service import ManagedService
from esc.config.load import load_config
from esc.config.schema import EscConfig, NodePaths, dump_config, parse_config
from esc.manager.tickets import derive_key, load_key
from esc.manager.tls import pair_addresses

SECRETS = ("peer-secret-Zq1", "repl-password-Xw2", "md5-password-Vy3")


def cfg(vim: str = "fake", vip: str = "192.0.2.100") -> EscConfig:
    """The pair of test_pair_cert, with each of its secrets set."""
    return parse_config(
        {
            "ha": {**HA, "kad_vip": vip},
            "agent": {"peer_secret": SECRETS[0]},
            "replication": {"password": SECRETS[1]},
            "bgp": {**BGP, "md5": SECRETS[2]},
            "manager": {"vim": vim},
        }
    )


def test_the_managers_config_copy_carries_none_of_the_pairs_secrets(tmp_path: Path) -> None:
    c = cfg()
    text = dump_config(c)
    assert all(s in text for s in SECRETS)  # the fixture does hold them
    copy = redacted(c, tmp_path / "api.crt", tmp_path / "api.key")
    out = dump_config(copy)
    for s in SECRETS:
        assert s not in out
    assert copy.manager.cert_file == str(tmp_path / "api.crt")
    assert copy.manager.key_file == str(tmp_path / "api.key")
    # everything the manager does use is unchanged
    assert copy.ha == c.ha and copy.database == c.database
    assert copy.manager.model_dump(exclude={"cert_file", "key_file"}) == c.manager.model_dump(
        exclude={"cert_file", "key_file"}
    )


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.lstat().st_mode)


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_stage_makes_the_managers_files_its_own_and_private(tmp_path: Path) -> None:
    pw = pwd.getpwnam("nobody")
    account = Account("nobody", pw.pw_uid, pw.pw_gid)
    paths = NodePaths(tmp_path)
    argv, tls = stage(cfg(), paths, account)
    d = paths.manager_run_dir
    conf = d / "esc.toml"
    assert argv == ["--config", str(conf)]
    for p, mode in [
        (d, 0o700),
        (conf, 0o600),
        (d / "api.key", 0o600),
        (d / "api.crt", 0o644),
        (paths.log_dir / "escmanager.log", 0o640),
    ]:
        st = p.lstat()
        assert (st.st_uid, st.st_gid, _mode(p)) == (pw.pw_uid, pw.pw_gid, mode), p
    loaded = load_config(conf)
    assert loaded.agent.peer_secret == "" and loaded.replication.password == ""
    assert loaded.bgp is not None and loaded.bgp.md5 is None
    assert tls.copies == (d / "api.crt", d / "api.key")
    # the originals stay root's
    assert tls.key.stat().st_uid == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_stage_refuses_a_log_planted_as_a_symlink(tmp_path: Path) -> None:
    pw = pwd.getpwnam("nobody")
    paths = NodePaths(tmp_path)
    target = tmp_path / "root-owned"
    target.write_text("keep\n")
    paths.log_dir.mkdir(parents=True)
    (paths.log_dir / "escmanager.log").symlink_to(target)
    with pytest.raises(OSError):
        stage(cfg(), paths, Account("nobody", pw.pw_uid, pw.pw_gid))
    assert target.stat().st_uid == 0 and target.read_text() == "keep\n"


def test_the_certificate_copy_follows_a_replaced_original(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "c").write_text("cert-1")
    (src / "k").write_text("key-1")
    copy = TlsCopy(src / "c", src / "k", tmp_path, owner=None)
    assert copy.sync() is True
    assert copy.sync() is False  # nothing changed: nothing copied
    crt, key = copy.copies
    assert (crt.read_text(), key.read_text(), _mode(key)) == ("cert-1", "key-1", 0o600)
    # replaced as write_atomic replaces (a new inode), as escadm cert rotate does
    (src / "k.new").write_text("key-2")
    (src / "k.new").rename(src / "k")
    (src / "c.new").write_text("cert-2")
    (src / "c.new").rename(src / "c")
    assert copy.sync() is True
    assert (crt.read_text(), key.read_text()) == ("cert-2", "key-2")
    # an original gone (mid-rotation): the copies are kept as they were
    (src / "k").unlink()
    assert copy.sync() is False
    assert key.read_text() == "key-2"


def test_the_portals_socket_only_reads() -> None:
    seen: list[tuple[str, str]] = []

    def agent(method: str, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        seen.append((method, path))
        return 200, {"ok": True}

    serve = read_only(agent)
    assert serve("GET", "/status", {}) == (200, {"ok": True})
    assert serve("GET", "/history?limit=5", {})[0] == 200
    for method, path in [
        ("POST", "/switchover"),
        ("POST", "/force-primary"),
        ("POST", "/reload"),
        ("POST", "/status"),
        ("GET", "/status/../reload"),
    ]:
        code, body = serve(method, path, {})
        assert code == 403 and "only reads" in body["error"], (method, path)
    assert seen == [("GET", "/status"), ("GET", "/history?limit=5")]


def test_the_manager_keeps_capabilities_only_for_the_lab_vim() -> None:
    a = Account("escmanager", 990, 990)
    assert setpriv_options(cfg(), None) == []  # an agent not running as root: no change
    plain = setpriv_options(cfg(), a)
    assert plain == ["--reuid", "990", "--regid", "990", "--clear-groups"]
    lab = setpriv_options(cfg(vim="lab"), a)
    caps = ",".join(f"+{c}" for c in LAB_VIM_CAPS)
    assert lab == [*plain, "--inh-caps", caps, "--ambient-caps", caps]
    assert setpriv_drop(a) == plain


def test_a_reloaded_vip_reaches_the_managers_certificate(tmp_path: Path) -> None:
    paths = NodePaths(tmp_path)
    pki.ensure_node(paths.pki_dir, "esc-ha-0", ["192.0.2.10"], make_ca=True)
    before = cfg()
    svc = ManagedService(paths, cfg=before)
    _, svc.tls = stage(before, paths, None)
    crt = svc.tls.copies[0]
    assert pki.cert_matches(paths.pki_dir / "ca.crt", crt, pair_addresses(before))
    after = cfg(vip="192.0.2.101")
    svc.reconfigure(after)
    assert svc.cfg is after
    assert svc.tls.sync() is True  # what the check loop does next
    assert "192.0.2.101" in pair_addresses(after)
    assert pki.cert_matches(paths.pki_dir / "ca.crt", crt, pair_addresses(after))
    assert not pki.cert_matches(paths.pki_dir / "ca.crt", crt, pair_addresses(before))


def test_stage_gives_the_manager_the_pairs_ticket_key_not_its_secret(tmp_path: Path) -> None:
    paths = NodePaths(tmp_path)
    stage(cfg(), paths, None)
    key = paths.manager_run_dir / "login.key"
    assert load_key(key) == derive_key(SECRETS[0]) and _mode(key) == 0o600
    assert SECRETS[0] not in key.read_text()
    no_secret = cfg().model_copy(
        update={"agent": cfg().agent.model_copy(update={"peer_secret": ""})}
    )
    stage(no_secret, paths, None)
    assert not key.exists()
