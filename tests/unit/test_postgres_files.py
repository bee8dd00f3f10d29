"""What the PostgreSQL driver writes and reads before a start, with links planted by the
postgres user in its own directories (a tmp directory stands for the data directory; no
server runs): root never writes through, chowns through or reads through them, and the local
socket is closed to every other account."""

from __future__ import annotations

import os
import pwd
import stat
from pathlib import Path

import pytest

from esc.drivers.postgres import PostgresDriver

VICTIM_TEXT = "root:secret-hash:19000:0:99999:7:::\n"


def _server_user() -> str:
    """postgres when the tests run as root on a host that has it (the real ownership is then
    checked); else whoever runs them (chown is skipped by the driver when not root)."""
    if os.geteuid() == 0:
        try:
            return pwd.getpwnam("postgres").pw_name
        except KeyError:
            pass
    return pwd.getpwuid(os.geteuid()).pw_name


def _driver(tmp_path: Path) -> PostgresDriver:
    user = _server_user()
    pgdata = tmp_path / "data" / "pgdata"
    pgdata.mkdir(parents=True)
    pw = pwd.getpwnam(user)
    if os.geteuid() == 0:
        os.chown(pgdata, pw.pw_uid, pw.pw_gid)  # the server's directory, as in production
    (pgdata / "PG_VERSION").write_text("15\n")
    return PostgresDriver(
        node_name="esc-ha-0",
        peer_name="esc-ha-1",
        pgdata=pgdata,
        data_root=tmp_path / "data",
        socket_dir=tmp_path / "run" / "postgresql",
        port=5432,
        listen="192.0.2.10",
        peer_host="192.0.2.11",
        repl_password="pw",
        bindir=Path("/nonexistent"),
        log_file=tmp_path / "log" / "postgres.log",
        os_user=user,
    )


def _victim(tmp_path: Path) -> Path:
    victim = tmp_path / "etc-shadow"
    victim.write_text(VICTIM_TEXT)
    victim.chmod(0o600)
    return victim


def test_prepare_runtime_follows_no_link_planted_in_the_data_directory(tmp_path: Path) -> None:
    """Before every start root writes pg_hba.conf and pg_ident.conf into the postgres-owned
    data directory. Links at the old fixed temporary names and at the targets themselves
    leave the file they point to as it was (content, owner, mode)."""
    drv = _driver(tmp_path)
    victim = _victim(tmp_path)
    for name in (".pg_hba.conf.esc.tmp", ".pg_ident.conf.esc.tmp", "pg_hba.conf"):
        (drv.pgdata / name).symlink_to(victim)
    drv._server.prepare_runtime()
    st = victim.lstat()
    assert victim.read_text() == VICTIM_TEXT
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (os.geteuid(), 0o600)
    uid = pwd.getpwnam(drv.os_user).pw_uid
    for name in ("pg_hba.conf", "pg_ident.conf"):
        f = drv.pgdata / name
        fst = f.lstat()
        assert stat.S_ISREG(fst.st_mode) and fst.st_uid == uid  # the server can read it
        assert stat.S_IMODE(fst.st_mode) == 0o600
    hba = [ln.split() for ln in (drv.pgdata / "pg_hba.conf").read_text().splitlines()]
    assert ["local", "all", "postgres", "peer", "map=esc"] in hba
    assert not any("trust" in ln for ln in hba if ln and not ln[0].startswith("#"))
    ident = (drv.pgdata / "pg_ident.conf").read_text()
    assert "esc  root  postgres" in ident and f"esc  {drv.os_user}  postgres" in ident


def test_the_socket_directory_is_closed_to_other_accounts(tmp_path: Path) -> None:
    drv = _driver(tmp_path)
    drv.socket_dir.mkdir(parents=True)
    drv.socket_dir.chmod(0o755)  # as an older version left it
    drv._server.prepare_runtime()
    st = drv.socket_dir.stat()
    assert stat.S_IMODE(st.st_mode) == 0o700
    assert st.st_uid == pwd.getpwnam(drv.os_user).pw_uid


def test_a_linked_postmaster_pid_is_not_read_through(tmp_path: Path) -> None:
    """postmaster.pid (data directory) and the socket lock (socket directory) are read by root:
    a link there is no postmaster and no lock, and the file it names is not read."""
    drv = _driver(tmp_path)
    victim = _victim(tmp_path)
    victim.write_text(f"{os.getpid()}\n{drv.pgdata}\n")  # would parse as a pid file
    (drv.pgdata / "postmaster.pid").symlink_to(victim)
    assert drv.postmaster_alive() is False
    drv.socket_dir.mkdir(parents=True)
    (drv.socket_dir / ".s.PGSQL.5432.lock").symlink_to(victim)
    drv._server.clear_stale_pid_file()
    assert (drv.socket_dir / ".s.PGSQL.5432.lock").is_symlink()  # not read, not acted on


@pytest.mark.skipif(os.geteuid() != 0, reason="the ownership hand-over needs root")
def test_the_passfile_is_handed_to_the_server_user_only(tmp_path: Path) -> None:
    drv = _driver(tmp_path)
    drv._follower.write_passfile()
    st = drv.passfile.lstat()
    assert st.st_uid == pwd.getpwnam(drv.os_user).pw_uid and stat.S_IMODE(st.st_mode) == 0o600


def test_refresh_access_replaces_an_older_versions_rules(tmp_path: Path) -> None:
    """At agent start, the files an older version left (a trust line, an open socket
    directory) are replaced even before the database's next start (no server runs here, so
    there is nothing to reload)."""
    drv = _driver(tmp_path)
    (drv.pgdata / "pg_hba.conf").write_text("local all postgres trust\n")
    drv.socket_dir.mkdir(parents=True)
    drv.socket_dir.chmod(0o755)
    drv.refresh_access()
    assert "trust\n" not in (drv.pgdata / "pg_hba.conf").read_text()
    assert (drv.pgdata / "pg_ident.conf").exists()
    assert stat.S_IMODE(drv.socket_dir.stat().st_mode) == 0o700
    (drv.pgdata / "PG_VERSION").unlink()  # no cluster (yet, or not mounted here): untouched
    (drv.pgdata / "pg_hba.conf").write_text("left alone\n")
    drv.refresh_access()
    assert (drv.pgdata / "pg_hba.conf").read_text() == "left alone\n"


def test_a_promotion_reserves_the_peers_timelines_it_never_streamed(tmp_path: Path) -> None:
    drv = _driver(tmp_path)
    wal = drv.pgdata / "pg_wal"
    wal.mkdir()
    (wal / "00000003.history").write_text("1\t0/3000060\tno recovery target specified\n")
    drv._primary.reserve_timelines(1, 4)
    # 2 and 4 reserved (comments only: PostgreSQL's parser skips them), 3 left as it was.
    assert (wal / "00000002.history").read_text().startswith("# esc-ha: timeline 2 belongs")
    assert (wal / "00000003.history").read_text().startswith("1\t0/3000060")
    assert (wal / "00000004.history").exists() and not (wal / "00000005.history").exists()
    assert (wal / "00000002.history").stat().st_uid == drv.pgdata.stat().st_uid
    drv._primary.reserve_timelines(4, 4)  # already on the peer's newest: nothing to reserve
    assert sorted(p.name for p in wal.iterdir())[-1] == "00000004.history"
