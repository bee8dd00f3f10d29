"""The owner of one ExabgpDriver, for tests/integration/test_exabgp_driver.py.

``python exabgp_host.py NODE_ROOT BGP_JSON`` runs inside the node's network namespace: it starts
the driver (so ExaBGP is its child, dying with it) and ticks it every 50 ms like the agent's loop.
It reads one command per stdin line (``announce``, ``withdraw``, ``status``) and answers each with
one JSON line: the driver's status plus ``took``, the seconds the call took.
"""

from __future__ import annotations

import json
import os
import select
import sys
import time
from dataclasses import asdict
from pathlib import Path

from esc.config.schema import NodePaths, parse_config
from esc.drivers.exabgp import ExabgpDriver

TICK_S = 0.05


def main() -> int:
    root, bgp = Path(sys.argv[1]), json.loads(sys.argv[2])
    drv = ExabgpDriver(parse_config({"node_name": "ha0", "bgp": bgp}), NodePaths(root))
    drv.start()
    buf = b""
    next_tick = time.monotonic()
    try:
        while True:
            now = time.monotonic()
            if now >= next_tick:  # on schedule, however often the test asks
                drv.tick()
                next_tick = now + TICK_S
            ready, _, _ = select.select([0], [], [], max(0.0, next_tick - time.monotonic()))
            if not ready:
                continue
            data = os.read(0, 4096)
            if not data:
                return 0
            *lines, buf = (buf + data).split(b"\n")
            for raw in lines:
                cmd = raw.decode().strip()
                t0 = time.monotonic()
                if cmd == "announce":
                    drv.set_announced(True)
                elif cmd == "withdraw":
                    drv.set_announced(False)
                took = time.monotonic() - t0
                print(json.dumps({**asdict(drv.status()), "took": took}), flush=True)
    finally:
        drv.stop()


if __name__ == "__main__":
    sys.exit(main())
