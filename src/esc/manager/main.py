"""esc-manager: the northbound REST service and portal of one node, run by esc-haagent.

    esc-manager            # reads $ESC_ROOT/etc/esc/esc.toml (ESC_ROOT defaults to /)

It takes no arguments but --help. It starts inactive on every node, binds its listeners
(HTTPS, plain HTTP when configured (a redirect to HTTPS, nothing else), the operator portal's
HTTPS port unless switched off, the control socket), opens the database pool without waiting
for the database, and then waits for the agent's activate message. SIGTERM/SIGINT stop it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import uvicorn
from starlette.types import ASGIApp

from esc.config.schema import EscConfig, NodePaths, load_config
from esc.errors import EscError
from esc.manager import db
from esc.manager.api import build_api
from esc.manager.callbacks import CallbackGuard, CallbackPolicy, Resolver, system_resolver
from esc.manager.portal import live_portal
from esc.manager.service import Manager, build_control_app
from esc.manager.tickets import KEY_FILE, load_key
from esc.manager.tls import CertWatch, ensure_certificate
from esc.manager.transport import BodyLimit, Hsts, HttpsRedirect
from esc.manager.vim import Vim, build_vim
from esc.manager.worker import WorkerTuning

log = logging.getLogger("esc.manager")

LOG_FILE = "escmanager.log"


def control_socket(paths: NodePaths) -> Path:
    """In the manager's own directory (its user's): the agent, as root, reaches it there."""
    return paths.manager_socket


def listen_tcp(bind: str, port: int) -> socket.socket:
    """A listening TCP socket; ``::`` accepts IPv4 too (IPV6_V6ONLY off)."""
    addr = ipaddress.ip_address(bind)
    family = socket.AF_INET6 if addr.version == 6 else socket.AF_INET
    # proto must be IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted sockets only
    # then, and without it every keep-alive response waits ~40 ms for a delayed ACK
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((str(addr), port))
        sock.listen(1024)
    except OSError:
        sock.close()
        raise
    return sock


def listen_unix(path: Path) -> socket.socket:
    """The control socket, mode 0600 from the moment it exists (its user and root only)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(str(path))
    except OSError:
        sock.close()
        raise
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    sock.listen(64)
    return sock


class _Server(uvicorn.Server):
    """One listener; signals are handled once for the whole process, not per server."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _server(app: ASGIApp, tls: tuple[Path, Path] | None = None) -> _Server:
    config = uvicorn.Config(
        app,
        lifespan="off",
        log_config=None,
        access_log=False,
        server_header=False,
        proxy_headers=False,
        timeout_graceful_shutdown=2,
        ssl_certfile=str(tls[0]) if tls else None,
        ssl_keyfile=str(tls[1]) if tls else None,
    )
    return _Server(config)


async def serve(
    cfg: EscConfig,
    paths: NodePaths,
    vim: Vim,
    stop: asyncio.Event,
    *,
    conninfo: str | None = None,
    tuning: WorkerTuning | None = None,
    resolver: Resolver | None = None,
) -> None:
    """Run the service until ``stop`` is set (or a listener fails). ``resolver`` resolves
    Callback names (default: the system's)."""
    mcfg = cfg.manager
    manager = Manager(
        cfg.node_name,
        conninfo or db.conninfo(cfg, paths),
        vim,
        tuning,
        shared_storage=cfg.ha is not None and cfg.ha.ha_mode == "cinder",
        login_key=load_key(paths.manager_run_dir / KEY_FILE),
        callbacks=CallbackGuard(
            CallbackPolicy(mcfg.callback_networks), resolver or system_resolver
        ),
    )
    tls = ensure_certificate(paths, mcfg, cfg)
    # HTTPS answers carry HSTS; plain HTTP, when configured, only redirects to HTTPS (to the
    # request's Host when it is a valid host, else the VIP, else the address it reached)
    api = Hsts(build_api(manager, max_body_bytes=mcfg.max_body_bytes))
    fallback = str(cfg.ha.kad_vip.address) if cfg.ha is not None else None
    bind = str(mcfg.bind)
    listeners: list[tuple[_Server, socket.socket]] = []
    sock_path = control_socket(paths)
    try:
        listeners.append((_server(build_control_app(manager)), listen_unix(sock_path)))
        listeners.append((_server(api, tls), listen_tcp(bind, mcfg.https_port)))
        if mcfg.http_port is not None:
            redirect = HttpsRedirect(mcfg.https_port, fallback)
            listeners.append((_server(redirect), listen_tcp(bind, mcfg.http_port)))
        if mcfg.portal_port is not None:  # its own app and port, the API's certificate
            portal = Hsts(BodyLimit(live_portal(cfg, paths, manager), mcfg.max_body_bytes))
            listeners.append((_server(portal, tls), listen_tcp(bind, mcfg.portal_port)))
    except OSError:
        for _, s in listeners:
            s.close()
        raise
    await manager.start()
    log.info(
        "escmanager %s started inactive: https %s:%d%s%s, control %s",
        cfg.node_name,
        bind,
        mcfg.https_port,
        f", http {bind}:{mcfg.http_port} (redirects to https)" if mcfg.http_port else "",
        f", portal https {bind}:{mcfg.portal_port}" if mcfg.portal_port else "",
        sock_path,
    )
    tasks = [asyncio.create_task(srv.serve(sockets=[s])) for srv, s in listeners]
    stopper = asyncio.create_task(stop.wait())
    # a rotated certificate (`escadm cert rotate`) serves new handshakes without a restart
    watch = CertWatch(*tls, lambda: [c for srv, _ in listeners if (c := srv.config.ssl)])
    watch.start()
    try:
        await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.stop()
        for srv, _ in listeners:
            srv.should_exit = True
        await asyncio.gather(*tasks, return_exceptions=True)
        stopper.cancel()
        await manager.close()
        for _, s in listeners:
            s.close()
        sock_path.unlink(missing_ok=True)
        log.info("escmanager stopped")


def setup_logging(paths: NodePaths) -> None:
    paths.log_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(paths.log_dir / LOG_FILE)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    logging.getLogger("psycopg.pool").setLevel(logging.WARNING)


async def _main(cfg: EscConfig, paths: NodePaths) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await serve(cfg, paths, build_vim(cfg, paths), stop)


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when installed (noticeably more requests per second), else asyncio's loop."""
    try:
        import uvloop  # noqa: PLC0415
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="esc-manager",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config",
        type=Path,
        help="the config to read (default <etc>/esc.toml); the agent gives the copy it makes "
        "for the manager, without the pair's secrets",
    )
    args = parser.parse_args(argv)  # --help prints and exits 0, anything else exits 2
    paths = NodePaths.from_env()
    try:
        config = args.config or paths.config_file
        cfg = load_config(config) if args.config or config.exists() else EscConfig()
        setup_logging(paths)
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(_main(cfg, paths))
    except (EscError, OSError) as exc:
        log.error("escmanager: %s", exc)
        print(f"esc-manager: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
