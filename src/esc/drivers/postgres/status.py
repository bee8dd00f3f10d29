"""What the status look makes of the server: :class:`DbStatus` (and the walreceiver's peer,
which ``follow`` needs) from one query, after the files said the server is up."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from esc.model import DbRole, DbStatus, fmt_lsn

format_lsn = fmt_lsn  # 50331744 -> '0/3000060' (esc.model: one spelling project-wide)


def parse_lsn(text: str) -> int:
    """``'0/3000060'`` -> 50331744. Raises ValueError on anything else."""
    hi, sep, lo = text.strip().partition("/")
    if not sep or not hi or not lo:
        raise ValueError(f"{text!r} is not an LSN")
    return (int(hi, 16) << 32) | int(lo, 16)


@dataclass(frozen=True)
class Probe:
    """One look at the server, richer than DbStatus: ``follow`` needs the walreceiver's peer."""

    status: DbStatus
    sender_host: str | None = None
    sender_port: int | None = None

    def streams_from(self, host: str, port: int) -> bool:
        """A standby streaming from ``host``:``port`` now."""
        return (
            self.status.streaming
            and self.sender_host == host.strip("[]")
            and self.sender_port == port
        )


STATUS_SQL = """
SELECT pg_is_in_recovery(),
       CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()
            ELSE pg_current_wal_lsn() END::text,
       CASE WHEN pg_is_in_recovery() THEN pg_last_wal_receive_lsn() END::text,
       CASE WHEN pg_is_in_recovery() THEN NULL
            ELSE pg_walfile_name(pg_current_wal_lsn()) END,
       (pg_control_checkpoint()).timeline_id,
       w.status, w.received_tli, w.sender_host, w.sender_port,
       (SELECT application_name FROM pg_stat_replication
         WHERE sync_state = 'sync' ORDER BY application_name LIMIT 1),
       current_setting('synchronous_standby_names'),
       CASE WHEN NOT pg_is_in_recovery()
              OR pg_last_wal_receive_lsn() IS NOT DISTINCT FROM pg_last_wal_replay_lsn() THEN 0
            ELSE COALESCE(EXTRACT(epoch FROM now() - pg_last_xact_replay_timestamp()), 0)
       END::float8,
       (SELECT string_agg(application_name, ',') FROM pg_stat_replication
         WHERE state = 'streaming'),
       CASE WHEN NOT pg_is_in_recovery()
            THEN pg_snapshot_xmax(pg_current_snapshot())::text::int8 END,
       CASE WHEN NOT pg_is_in_recovery()
            THEN pg_snapshot_xmin(pg_current_snapshot())::text::int8 END
FROM (SELECT 1) AS one LEFT JOIN pg_stat_wal_receiver AS w ON true
"""


def probe_from_row(row: Sequence[Any]) -> Probe:
    """The status query's row (:data:`STATUS_SQL`, on a running server) as a :class:`Probe`."""
    in_recovery, lsn, receive, walfile, ckpt_tli = row[0:5]
    wr_status, wr_tli, sender_host, sender_port = row[5:9]
    sync_standby, sync_names, lag, streaming_to, xid_xmax, xid_xmin = row[9:15]
    if in_recovery:
        timeline = int(wr_tli) if wr_tli else int(ckpt_tli)
    else:
        # the insert timeline: the checkpoint's lags after a promotion (PG15 promotes
        # without waiting for the end-of-recovery checkpoint)
        timeline = int(walfile[:8], 16) if walfile else int(ckpt_tli)
    status = DbStatus(
        role=DbRole.STANDBY if in_recovery else DbRole.PRIMARY,
        timeline=timeline,
        lsn=parse_lsn(lsn) if lsn else 0,
        receive_lsn=parse_lsn(receive) if receive else 0,
        streaming=wr_status == "streaming",
        sync_standby=None if in_recovery else sync_standby,
        sync_names=str(sync_names),
        replay_lag_s=float(lag or 0.0),
        streaming_to=tuple(streaming_to.split(",")) if streaming_to else (),
        xid_xmax=int(xid_xmax or 0),
        xid_xmin=int(xid_xmin or 0),
    )
    return Probe(status, sender_host, int(sender_port) if sender_port else None)
