"""Booted lab hosts: Debian 12 systems with systemd as PID 1, in systemd-nspawn containers.

A booted node is the cached image (``esclab.image``) under an overlay of its own (its disk:
what it writes survives a reboot), booted by ``systemd-nspawn --boot`` inside the node's lab
network namespace (``--network-namespace-path``), so it has the same links and addresses as a
process host. This machine's PID 1 is not systemd and there is no machined: the containers run
with ``--register=no --keep-unit`` (probed; see the design notes).

Each node has a supervisor process (``python -m esclab.booted NODE ...``) that starts nspawn
and starts it again when the container asks for a reboot (nspawn exits with 133): ``reboot``
inside a node is a real reboot. Any other end of the container ends the supervisor: a power cut
is a SIGKILL of the container's init from outside (every process of the container dies with
it, as on a machine that loses power), and the node's links go down with it until power-on.

Files: ``<lab>/booted/<node>/{upper,work,root}`` (the overlay), ``console.log`` (the boot
console), ``nspawn.pid`` (written by the supervisor for each boot).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from esc.errors import LabError
from esclab.run import Result, run

REBOOT_EXIT = 133  # systemd-nspawn's exit status when the container asked for a reboot
# The environment of a command run inside a node: nothing of ours leaks in.
NODE_ENV = ["env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "LANG=C.UTF-8"]


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


class BootedNode:
    """One booted node of the lab, by name; its files under ``<lab>/booted/<name>``."""

    def __init__(self, lab_root: Path, name: str) -> None:
        self.name = name
        self.dir = lab_root / "booted" / name
        self.upper = self.dir / "upper"
        self.work = self.dir / "work"
        self.root = self.dir / "root"
        self.console = self.dir / "console.log"
        self.pid_file = self.dir / "nspawn.pid"
        self.power_file = self.dir / "power"  # "on" while the supervisor should keep it up

    # --- disk -------------------------------------------------------------------------------

    def prepare(self, image: Path) -> None:
        """Mount the node's disk: the image below its own writable layer (idempotent)."""
        for d in (self.upper, self.work, self.root):
            d.mkdir(parents=True, exist_ok=True)
        if os.path.ismount(self.root):
            return
        opts = f"lowerdir={image},upperdir={self.upper},workdir={self.work}"
        run(["mount", "-t", "overlay", "overlay", "-o", opts, str(self.root)])
        (self.root / "etc/hostname").write_text(self.name + "\n")

    # --- power ------------------------------------------------------------------------------

    def power_on(self, bind_ro: Sequence[tuple[Path, str]] = ()) -> int:
        """Start the supervisor (which boots the container); returns its pid."""
        self.power_file.write_text("on\n")
        argv = [sys.executable, "-m", "esclab.booted", self.name, str(self.root)]
        for src, dst in bind_ro:
            argv += ["--bind-ro", f"{src}:{dst}"]
        with open(self.console, "ab") as log:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return proc.pid

    def nspawn_pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _comm(pid) == "systemd-nspawn" else None

    def leader(self) -> int | None:
        """The container's init (PID 1 inside), seen from here; None when it is not running."""
        nspawn = self.nspawn_pid()
        if nspawn is None:
            return None
        for child in _children(nspawn):
            if _comm(child) == "systemd":
                return child
        return None

    def is_running(self) -> bool:
        return self.leader() is not None

    def power_cut(self) -> None:
        """Cut the power: SIGKILL the container's init (all of it dies); no reboot follows."""
        self.power_file.write_text("off\n")
        leader = self.leader()
        if leader is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(leader, signal.SIGKILL)
        nspawn = self.nspawn_pid()
        deadline = time.monotonic() + 30
        while nspawn is not None and _comm(nspawn) == "systemd-nspawn":
            if time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(nspawn, signal.SIGKILL)
                break
            time.sleep(0.05)

    # --- inside -----------------------------------------------------------------------------

    def argv(self, argv: Sequence[str]) -> list[str]:
        """argv that runs ``argv`` inside the node (all its namespaces, a clean environment)."""
        leader = self.leader()
        if leader is None:
            raise LabError(f"{self.name} is not running")
        ns = ["--mount", "--uts", "--ipc", "--net", "--pid", "--cgroup"]
        return ["nsenter", f"--target={leader}", *ns, "--", *NODE_ENV, *argv]

    def exec(
        self,
        argv: Sequence[str],
        check: bool = True,
        timeout: float = 60.0,
        input_: str | None = None,
    ) -> Result:
        return run(self.argv(argv), check=check, timeout=timeout, input_=input_)

    def file_root(self) -> Path:
        """The node's file system as seen from here: the live one (its /run included) while it
        runs, its disk otherwise."""
        leader = self.leader()
        return Path(f"/proc/{leader}/root") if leader is not None else self.root

    def wait_booted(self, timeout: float = 120.0) -> None:
        """Wait until systemd says the system is up (running, or degraded: a failed unit)."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if self.is_running():
                res = self.exec(["systemctl", "is-system-running"], check=False, timeout=10)
                last = res.stdout.strip()
                if last in ("running", "degraded"):
                    return
            time.sleep(0.2)
        raise LabError(
            f"{self.name} did not boot within {timeout:.0f}s ({last or 'no init'}); "
            f"see {self.console}"
        )


def supervise(name: str, root: Path, binds: Sequence[str]) -> int:
    """Boot the container, again after each reboot, until it ends any other way."""
    node_dir = root.parent
    pid_file = node_dir / "nspawn.pid"
    power_file = node_dir / "power"
    argv = [
        "systemd-nspawn",
        "--quiet",
        "--register=no",
        "--keep-unit",
        "--boot",
        f"--directory={root}",
        f"--machine={name}",
        f"--network-namespace-path=/run/netns/{name}",
        "--capability=CAP_NET_ADMIN,CAP_NET_RAW,CAP_SYS_ADMIN",
        "--console=read-only",
        "--kill-signal=SIGRTMIN+3",
        *[f"--bind-ro={b}" for b in binds],
    ]
    while True:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
        pid_file.write_text(f"{proc.pid}\n")
        rc = proc.wait()
        print(f"esclab.booted: {name}: nspawn exited with {rc}", flush=True)
        try:
            on = power_file.read_text().strip() == "on"
        except OSError:
            on = False
        if rc != REBOOT_EXIT or not on:
            return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="esclab.booted", description=__doc__)
    parser.add_argument("name")
    parser.add_argument("root", type=Path)
    parser.add_argument("--bind-ro", action="append", default=[])
    args = parser.parse_args(argv)
    return supervise(args.name, args.root, args.bind_ro)


if __name__ == "__main__":
    sys.exit(main())
