"""esc-witness: the witness host of a pair in quorum mode (``ha.quorum = "etcd"``).

    esc-witness            # reads $ESC_ROOT/etc/esc/esc.toml (the pair's config, ha.witness)

The same package as the nodes, in its ``witness`` role: it runs the third etcd member, named
``witness``, on ``ha.witness`` (which this host must own), with its certificate in
``<etc>/pki`` and its data in ``<data>/etcd``, and starts it again if it exits. It holds no
database and never serves: it only lets two nodes that cannot see each other find which one
the quorum follows. Logs to ``<log>/esc_witness.log`` (etcd's own output: ``<log>/etcd.log``).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from types import FrameType

from esc.agent.main import setup_logging
from esc.agent.quorum_setup import build_member
from esc.config.ha import WITNESS_NAME
from esc.config.schema import NodePaths, load_config
from esc.errors import ConfigError, EscError
from esc.host import HostFacts, SystemHostFacts

log = logging.getLogger("esc.witness")


def check_owner(witness: str, host: HostFacts) -> None:
    mine = {str(a.ip) for addrs in host.addresses().values() for a in addrs}
    if witness not in mine:
        raise ConfigError("ha.witness", f"this host does not own {witness}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="esc-witness",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.parse_args(argv)
    paths = NodePaths.from_env()
    try:
        setup_logging(paths, "esc_witness.log")
        cfg = load_config(paths.config_file)
        if cfg.ha is None or cfg.ha.witness is None:
            raise ConfigError("ha.witness", "not set: this config is not in quorum mode")
        check_owner(str(cfg.ha.witness), SystemHostFacts())
        member = build_member(cfg, paths, WITNESS_NAME)
        member.start()
    except (EscError, OSError) as exc:
        print(f"esc-witness: {exc}", file=sys.stderr)
        log.error("not started: %s", exc)
        return 2
    stop = threading.Event()

    def _stop(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    log.info("esc-witness: etcd member %s on %s", WITNESS_NAME, cfg.ha.witness)
    while not stop.wait(1.0):
        member.ensure_running()
    member.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
