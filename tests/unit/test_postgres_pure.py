"""The PostgreSQL driver's pure helpers: quoting, rendering and parsing. No server needed."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from esc.config.schema import NodePaths, parse_config
from esc.drivers.fake import FakeDatabase
from esc.drivers.postgres import (
    CONF_BEGIN,
    CONF_END,
    PostgresDriver,
    RewindCheck,
    committed_xids,
    conf_quote,
    count_waldump_records,
    diverged_rows_query,
    format_lsn,
    hba_address,
    merge_conf_block,
    pair_sync_names,
    parse_basebackup_progress,
    parse_controldata,
    parse_lsn,
    parse_pid_file,
    parse_rewind_output,
    passfile_escape,
    passfile_text,
    preserved_name,
    render_hba,
    render_ident,
    render_shared_conf,
    render_standby_auto_conf,
    server_options,
    slot_name,
    sync_names_value,
    touched_heap_blocks,
)
from esc.drivers.postgres.forensics import segment_name, wal_start
from esc.drivers.postgres.status import probe_from_row
from esc.drivers.postgres.tools import read_progress
from esc.errors import ConfigError, DbError
from esc.model import DbRole, DbStatus


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0/0", 0),
        ("0/3000060", 0x3000060),
        ("1/0", 1 << 32),
        ("FF/FFFFFFFF", (0xFF << 32) | 0xFFFFFFFF),
    ],
)
def test_lsn_round_trip(text: str, value: int) -> None:
    assert parse_lsn(text) == value
    assert format_lsn(value) == text


@pytest.mark.parametrize("bad", ["", "3000060", "0/", "/1", "x/1"])
def test_parse_lsn_refuses_garbage(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_lsn(bad)


@pytest.mark.parametrize(
    ("node", "slot"), [("ha0", "ha0"), ("ha-1", "ha_1"), ("Node.A-2", "node_a_2")]
)
def test_slot_name_is_a_valid_slot(node: str, slot: str) -> None:
    assert slot_name(node) == slot


def test_conf_quote_escapes_quotes_and_backslashes() -> None:
    assert conf_quote("a'b\\c") == "'a''b\\\\c'"


def test_passfile_line_escapes_separator_and_backslash() -> None:
    assert passfile_escape("p:w\\d") == "p\\:w\\\\d"
    assert passfile_text("replicator", "s:e\\c") == "*:*:*:replicator:s\\:e\\\\c\n"


def test_sync_names_quote_identifiers() -> None:
    assert sync_names_value(None) == ""
    assert sync_names_value("ha-1") == '"ha-1"'
    assert sync_names_value('we"ird') == '"we""ird"'
    # symmetric, so the line is the same on both nodes whichever builds it
    assert pair_sync_names("ha-1", "ha-0") == pair_sync_names("ha-0", "ha-1")
    assert pair_sync_names("ha-1", "ha-0") == 'FIRST 1 ("ha-0", "ha-1")'


def test_hba_allows_only_the_peer_for_replication() -> None:
    assert hba_address("192.0.2.11") == "192.0.2.11/32"
    assert hba_address("[2001:db8::b]") == "2001:db8::b/128"
    text = render_hba("192.0.2.11")
    lines = [ln.split() for ln in text.splitlines() if ln and not ln.startswith("#")]
    # No local path to the superuser: peer authentication through the esc map, never trust.
    assert ["local", "all", "postgres", "peer", "map=esc"] in lines
    # and esc-manager's own role (no superuser) to the application database only
    assert [ln for ln in lines if ln[0] == "local"] == [
        ["local", "all", "postgres", "peer", "map=esc"],
        ["local", "esc", "escmanager", "peer"],
    ]
    # The replicator: from the peer only, over TLS with a certificate of the pair's CA, and
    # only streaming and pg_rewind's database (never the application's).
    cert = "clientcert=verify-ca"
    assert [ln for ln in lines if ln[0] != "local"] == [
        ["hostssl", "postgres", "replicator", "192.0.2.11/32", "scram-sha-256", cert],
        ["hostssl", "replication", "replicator", "192.0.2.11/32", "scram-sha-256", cert],
    ]
    assert not any("trust" in ln for ln in lines)
    plain = render_hba("192.0.2.11", tls=False)  # a driver built without certificates
    assert "hostssl" not in plain and "all          replicator" not in plain
    with pytest.raises(ValueError):
        hba_address("peer.example")


def test_ident_maps_only_root_and_the_server_user_to_the_superuser() -> None:
    text = render_ident(["root", "postgres", "root"])
    lines = [ln.split() for ln in text.splitlines() if ln and not ln.startswith("#")]
    assert lines == [["esc", "root", "postgres"], ["esc", "postgres", "postgres"]]
    with pytest.raises(ConfigError, match="os_user"):
        render_ident(["root", "post gres\nesc nobody"])


def test_shared_conf_has_no_node_specific_setting() -> None:
    text = render_shared_conf("ha-1", "ha-0")
    assert text == render_shared_conf("ha-0", "ha-1")
    assert 'synchronous_standby_names = \'FIRST 1 ("ha-0", "ha-1")\'' in text
    for setting in ("wal_level = replica", "wal_log_hints = on", "hot_standby = on"):
        assert setting in text
    for node_specific in ("cluster_name", "port =", "unix_socket_directories", "listen_addresses"):
        assert node_specific not in text


def test_merge_conf_block_replaces_instead_of_appending() -> None:
    block = render_shared_conf("a", "b")
    once = merge_conf_block("max_connections = 100\n", block)
    assert merge_conf_block(once, block) == once
    assert once.count(CONF_BEGIN) == 1 and once.count(CONF_END) == 1
    assert once.startswith("max_connections = 100\n")


def test_standby_auto_conf_is_the_whole_file() -> None:
    text = render_standby_auto_conf("host=192.0.2.10 user=replicator passfile='/a b'", "ha_1")
    assert "primary_conninfo = 'host=192.0.2.10 user=replicator passfile=''/a b'''" in text
    assert "primary_slot_name = 'ha_1'" in text
    assert text.count("primary_conninfo") == 1


def test_server_options_are_shell_quoted() -> None:
    opts = server_options("ha-0", 5432, Path("/run/esc/pg sock"), "*")
    assert opts == (
        "-c cluster_name=ha-0 -c port=5432 -c 'unix_socket_directories=/run/esc/pg sock'"
        " -c unix_socket_permissions=0700 -c 'listen_addresses=*'"
    )
    tls = server_options("ha-0", 5432, Path("/s"), "192.0.2.10", Path("/d/pgtls"))
    assert tls.endswith(
        "-c listen_addresses=192.0.2.10 -c ssl=on -c ssl_ca_file=/d/pgtls/ca.crt"
        " -c ssl_cert_file=/d/pgtls/host.crt -c ssl_key_file=/d/pgtls/host.key"
        " -c ssl_min_protocol_version=TLSv1.3"
    )


def test_rewind_output() -> None:
    diverged = (
        "pg_rewind: servers diverged at WAL location 0/3033398 on timeline 1\n"
        "pg_rewind: rewinding from last common checkpoint at 0/3033320 on timeline 1\n"
    )
    assert parse_rewind_output(diverged) == RewindCheck(True, 0x3033398, 1)
    same = (
        "pg_rewind: source and target cluster are on the same timeline\n"
        "pg_rewind: no rewind required\n"
    )
    assert parse_rewind_output(same) == RewindCheck(False)
    behind = (
        "pg_rewind: servers diverged at WAL location 0/3000000 on timeline 1\n"
        "pg_rewind: no rewind required\n"
    )
    assert parse_rewind_output(behind).needed is False
    with pytest.raises(ValueError):
        parse_rewind_output("pg_rewind: error: something else\n")


def test_basebackup_progress() -> None:
    assert parse_basebackup_progress("   1234/23456 kB (5%), 0/1 tablespace") == (
        1234 * 1024,
        23456 * 1024,
    )
    assert parse_basebackup_progress("waiting for checkpoint") is None


def test_controldata_and_pid_file() -> None:
    data = parse_controldata(
        "pg_control version number:            1300\n"
        "Database cluster state:               shut down in recovery\n"
        "Latest checkpoint's TimeLineID:       2\n"
    )
    assert data["Database cluster state"] == "shut down in recovery"
    assert data["Latest checkpoint's TimeLineID"] == "2"
    pid = "4242\n/data\n1700000000\n5432\n/run\n*\n  5432001   1\nready   \n"
    assert parse_pid_file(pid) == (4242, "ready")
    assert parse_pid_file("4242\n/data\n") == (4242, "")
    assert parse_pid_file("") is None


def test_preserved_name_names_time_and_lsn() -> None:
    when = datetime(2026, 11, 27, 15, 30, tzinfo=UTC)
    assert preserved_name(when, 0x3000060) == "diverged-20261127T153000Z-0-3000060.txt"


def _rec(rmgr: str, tx: int, desc: str) -> str:
    """One pg_waldump line, as PG15 prints it (the lengths and LSNs do not matter here)."""
    return (
        f"rmgr: {rmgr:<11} len (rec/tot):     75/    75, tx: {tx:>10}, lsn: 0/03033398,"
        f" prev 0/03033370, desc: {desc}\n"
    )


REL = "rel 1663/16385/16391"
WALDUMP = "".join(
    [
        _rec("Heap", 734, f"INSERT+INIT off 1 flags 0x00, blkref #0: {REL} blk 0"),
        _rec("Heap", 735, f"HOT_UPDATE off 1 xmax 735 ; new off 2 xmax 0, blkref #0: {REL} blk 7"),
        _rec(
            "Heap2",
            0,
            f"VISIBLE cutoff xid 0, blkref #0: {REL} fork vm blk 0, blkref #1: {REL} blk 3",
        ),
        _rec("Btree", 734, "INSERT_LEAF off 1, blkref #0: rel 1663/16385/16394 blk 1"),
        _rec("Transaction", 734, "COMMIT 2026-11-27 15:33:20.044981 UTC; subxacts: 736 737"),
        _rec("Transaction", 735, "ABORT 2026-11-27 15:33:20.044981 UTC"),
        _rec("XLOG", 0, "CHECKPOINT_SHUTDOWN redo 0/3033500; tli 1"),
    ]
)


def test_waldump_parsing() -> None:
    assert count_waldump_records(WALDUMP) == 7
    # the aborted 735 is not data anyone was told was saved
    assert committed_xids(WALDUMP) == [734, 736, 737]
    # heap main-fork blocks only: the visibility-map fork and the index are not rows
    assert touched_heap_blocks(WALDUMP) == {(1663, 16385, 16391): [0, 3, 7]}


def test_diverged_rows_query_is_one_line_with_tid_ranges() -> None:
    text = diverged_rows_query(1663, 16391, [0, 7], [734, 736])
    assert "\n" not in text  # single-user mode ends a statement at a newline
    assert "pg_filenode_relation(1663, 16391)" in text
    assert "ctid >= ''(7,0)'' AND ctid < ''(8,0)''" in text
    assert "xmin = ANY(''{734,736}''::xid[])" in text
    assert text.count("UNION ALL") == 1


def _config(node: str = "ha-0") -> dict[str, object]:
    return {
        "node_name": node,
        "ha": {
            "ha_node_list": ["192.0.2.10", "192.0.2.11"],
            "kad_vip": "192.0.2.100",
            "kad_vif": "eth0",
            "node_names": ["ha-0", "ha-1"],
        },
        "replication": {"password": "pw"},
        "database": {"port": 5433, "name": "escdb"},
    }


def test_from_config_picks_the_other_address_as_peer_and_names_by_position() -> None:
    cfg = parse_config(_config())
    paths = NodePaths(Path("/lab/ha-1"))
    drv = PostgresDriver.from_config(cfg, paths, self_addr="192.0.2.11")
    assert drv.peer_host == "192.0.2.10"
    # names come from ha.node_names by position, whatever node_name (hostname) says
    assert (drv.node_name, drv.peer_name) == ("ha-1", "ha-0")
    assert drv.port == drv.peer_port == 5433
    assert drv.pgdata == paths.pgdata
    assert drv.socket_dir.parent == paths.run_dir
    assert drv.log_file == paths.log_dir / "postgres.log"
    assert drv.db_name == "escdb"
    assert (drv.own_slot, drv.peer_slot) == ("ha_1", "ha_0")
    assert "pw" not in repr(drv) and "pw" not in repr(drv.node)
    # listens on its own address only; replication over TLS with the pair's certificates
    assert drv.node.listen == "192.0.2.11"
    assert drv.node.pki == paths.pki_dir and drv.node.tls_dir == paths.data_dir / "pgtls"


def test_from_config_refuses_a_foreign_address() -> None:
    cfg = parse_config(_config())
    with pytest.raises(ConfigError) as err:
        PostgresDriver.from_config(cfg, NodePaths(Path("/x")), self_addr="192.0.2.99")
    assert err.value.field == "ha.ha_node_list"


def test_fake_database_moves_like_the_driver() -> None:
    a, b = FakeDatabase("ha-0"), FakeDatabase("ha-1")
    a.init_primary()
    assert b.follow("192.0.2.10").method == "reclone"
    assert b.follow("192.0.2.10").method == "none"
    a.stop()
    b.promote()
    assert b.status().role is DbRole.PRIMARY and b.status().timeline == 2
    a.start()
    a.commit()  # the isolated old primary writes: diverged
    result = a.follow("192.0.2.11")
    assert result.method == "rewind" and result.preserved is not None
    assert a.status().role is DbRole.STANDBY
    b.fail["promote"] = DbError("boom")
    with pytest.raises(DbError):
        b.promote()
    b.promote()  # the failure is injected once
    assert b.calls[-2:] == ["promote", "promote"]


def test_progress_lines_are_reported_with_the_operation() -> None:
    """pg_rewind --progress and pg_basebackup --progress both write 'N/M kB' lines with CR."""
    script = "printf '1/4 kB (25%%) copied\\r4/4 kB (100%%) copied\\nsome notice\\n' >&2"
    proc = subprocess.Popen(["sh", "-c", script], stderr=subprocess.PIPE)
    seen: list[tuple[str, int, int]] = []
    assert proc.stderr is not None
    tail = read_progress(proc.stderr, "rewinding", lambda *a: seen.append(a))
    proc.wait()
    assert seen == [("rewinding", 1024, 4096), ("rewinding", 4096, 4096), ("rewinding", 4096, 4096)]
    assert tail == "some notice"


def _status_row(**over: object) -> tuple[object, ...]:
    """A row of the status query (STATUS_SQL's fifteen columns), a primary's by default."""
    row: dict[str, object] = {
        "in_recovery": False,
        "lsn": "0/3000060",
        "receive": None,
        "walfile": "000000030000000000000003",
        "ckpt_tli": 2,
        "wr_status": None,
        "wr_tli": None,
        "sender_host": None,
        "sender_port": None,
        "sync_standby": "ha-1",
        "sync_names": '"ha-1"',
        "lag": 0.0,
        "streaming_to": "ha-1",
        "xid_xmax": 760,
        "xid_xmin": 750,
    }
    row.update(over)
    return tuple(row.values())


def test_a_primarys_status_row_takes_the_insert_timeline() -> None:
    """After a promotion the checkpoint's timeline lags: the WAL file's name is the truth."""
    probe = probe_from_row(_status_row())
    assert probe.status == DbStatus(
        role=DbRole.PRIMARY,
        timeline=3,
        lsn=0x3000060,
        sync_standby="ha-1",
        sync_names='"ha-1"',
        streaming_to=("ha-1",),
        xid_xmax=760,
        xid_xmin=750,
    )
    assert probe.sender_host is None and not probe.streams_from("192.0.2.10", 5432)


def test_a_standbys_status_row_names_its_sender() -> None:
    row = _status_row(
        in_recovery=True,
        receive="0/3000100",
        walfile=None,
        wr_status="streaming",
        wr_tli=4,
        sender_host="192.0.2.10",
        sender_port=5432,
        sync_standby="ignored on a standby",
        sync_names="",
        lag=1.5,
        streaming_to=None,
        xid_xmax=None,
        xid_xmin=None,
    )
    probe = probe_from_row(row)
    assert probe.status == DbStatus(
        role=DbRole.STANDBY,
        timeline=4,
        lsn=0x3000060,
        receive_lsn=0x3000100,
        streaming=True,
        sync_names="",
        replay_lag_s=1.5,
    )
    assert probe.streams_from("192.0.2.10", 5432)
    assert probe.streams_from("[192.0.2.10]", 5432)
    assert not probe.streams_from("192.0.2.10", 5433)
    assert not probe.streams_from("192.0.2.11", 5432)
    stopped_receiver = probe_from_row(_status_row(in_recovery=True, walfile=None, wr_tli=None))
    assert stopped_receiver.status.timeline == 2  # no walreceiver: the checkpoint's timeline
    assert not stopped_receiver.streams_from("192.0.2.10", 5432)


def test_the_waldump_starts_at_the_segment_holding_the_divergence_point() -> None:
    mb16 = 16 * 1024 * 1024
    assert segment_name(10, 4, mb16) == "0000000A0000000000000004"
    assert segment_name(1, 0x100 + 3, mb16) == "000000010000000100000003"  # 256 per log id
    names = [
        "00000009.history",
        "0000000A.history",
        "000000090000000000000003",
        "0000000A0000000000000003",
        "0000000A0000000000000004",
        "0000000A0000000000000005",  # preallocated, all zeros: never where reading starts
        "archive_status",
    ]
    assert wal_start(names, 10, 0x41E1878, mb16) == ("0000000A0000000000000004", 0x41E1878)
    # a timeline that began after the divergence point is read from its first segment
    later = ["0000000B0000000000000006", "0000000B0000000000000007"]
    assert wal_start(later, 11, 0x41E1878, mb16) == ("0000000B0000000000000006", 0x6000000)
    assert wal_start(names, 12, 0x41E1878, mb16) is None
    assert wal_start(["000000010000000000000002"], 1, 0x3000000, mb16) is None  # all before
