"""A stand-in for the ``exabgp`` executable, for the driver's unit tests: no BGP, no network.

``python fake_exabgp.py [--silent] EXABGP_CONF`` does what ExaBGP 4.2 does with our config's
process API, and nothing else: it starts the ``run`` command of the process section with pipes,
writes ``neighbor <remote> up`` to it, answers each command line with ``done`` (``error`` for a
line that is not ``announce route``/``withdraw route``), and appends every line it got to
``EXABGP_CONF.commands``. ``--silent`` never answers (a hung ExaBGP).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path


def main() -> int:
    silent = "--silent" in sys.argv
    conf = Path(sys.argv[-1])
    text = conf.read_text()
    run = re.search(r"^\s*run (.+);$", text, re.MULTILINE)
    peer = re.search(r"^neighbor (\S+) \{$", text, re.MULTILINE)
    if run is None or peer is None:
        print(f"fake_exabgp: no run line or neighbor in {conf}", file=sys.stderr)
        return 1
    helper = subprocess.Popen(run.group(1).split(), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert helper.stdin is not None and helper.stdout is not None
    log = conf.with_name(conf.name + ".commands")
    helper.stdin.write(f"neighbor {peer.group(1)} up\n\n".encode())
    helper.stdin.flush()
    for raw in helper.stdout:
        line = raw.decode().rstrip("\n")
        with log.open("a") as f:
            f.write(line + "\n")
        if silent:
            continue
        ok = line.startswith(("announce route ", "withdraw route "))
        helper.stdin.write(b"done\n" if ok else b"error\n")
        helper.stdin.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
