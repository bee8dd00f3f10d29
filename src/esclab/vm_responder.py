"""What runs inside one lab VM: answers one TCP port with the VM's name, then closes.

Started by the lab VIM as ``unshare --net -- PYTHON -m esclab.vm_responder --vm=ID ...``:
the process *is* the VM's network namespace (it lives exactly as long as this process), and
ping is answered by the kernel once the VIM has configured the address. It daemonizes so that
no manager has to reap it and it outlives the manager that created it (a VM survives the death
of a controller node, as a real one would):

1. bind and listen on the wildcard address (the VM's address is added after it starts);
2. fork; the child starts a new session, points stdin at /dev/null and stdout/stderr at
   ``--log``, writes its pid to ``--pidfile`` (so a manager that dies right now leaves a VM
   the next one can find) and tells the parent;
3. the parent prints the child's pid on stdout and exits 0.

Only the standard library, so it starts quickly.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import sys
import time


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="esclab.vm_responder")
    parser.add_argument("--vm", required=True, help="the VM's id (esc-vm-...)")
    parser.add_argument("--name", required=True, help="the line answered on each connection")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--family", type=int, choices=(4, 6), default=6)
    parser.add_argument("--pidfile", required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--foreground", action="store_true", help="do not daemonize (debug)")
    return parser.parse_args(argv)


def listen(family: int, port: int) -> socket.socket:
    af = socket.AF_INET6 if family == 6 else socket.AF_INET
    sock = socket.socket(af, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if af == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    sock.bind(("::" if af == socket.AF_INET6 else "0.0.0.0", port))
    sock.listen(64)
    return sock


def write_pidfile(path: str) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(f"{os.getpid()}\n")
    os.replace(tmp, path)


def serve(sock: socket.socket, name: str) -> None:
    answer = f"{name}\n".encode()
    while True:
        conn, _ = sock.accept()
        with conn, contextlib.suppress(OSError):
            conn.settimeout(2.0)
            conn.sendall(answer)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    sock = listen(args.family, args.port)
    if args.foreground:
        write_pidfile(args.pidfile)
        serve(sock, args.name)
        return 0
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(ready_r)
        os.setsid()
        devnull = os.open(os.devnull, os.O_RDONLY)
        log = os.open(args.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(devnull, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(devnull)
        os.close(log)
        # A daemon keeps nothing it inherited: a caller's pipe held open here (uvloop's spawn
        # leaves some without close-on-exec) would make the caller wait for EOF forever.
        keep = sorted({0, 1, 2, sock.fileno(), ready_w})
        for low, high in zip(keep, [*keep[1:], os.sysconf("SC_OPEN_MAX")], strict=True):
            os.closerange(low + 1, high)
        write_pidfile(args.pidfile)
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        print(f"{stamp} {args.vm} ({args.name}) listening on port {args.port}", flush=True)
        os.write(ready_w, b"1")
        os.close(ready_w)
        try:
            serve(sock, args.name)
        finally:
            os._exit(1)
    os.close(ready_w)
    sock.close()
    ok = os.read(ready_r, 1) == b"1"
    if not ok:
        print("vm_responder: the daemon died before it was ready", file=sys.stderr)
        return 1
    print(pid, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
