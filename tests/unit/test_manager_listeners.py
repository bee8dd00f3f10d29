"""esc-manager's listeners as serve() wires them, on loopback, without a database: an inactive
node answers 503 before it needs one, which is enough to see the transport layers in place
(HSTS on every HTTPS answer, plain HTTP only redirecting, the portal's body limit)."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import httpx

from esc.config.schema import EscConfig, ManagerConfig, NodePaths
from esc.manager.callbacks import IPAddress
from esc.manager.main import serve
from esc.manager.vim import FakeVim


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def until_listening(port: int, deadline_s: float = 20.0) -> None:
    end = time.monotonic() + deadline_s
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if time.monotonic() > end:
                raise
            await asyncio.sleep(0.02)  # polling for the listener, not waiting a fixed time
            continue
        writer.close()
        await writer.wait_closed()
        return


async def no_names(host: str, port: int) -> list[IPAddress]:
    raise OSError(host)


def test_https_answers_carry_hsts_and_plain_http_only_redirects(tmp_path: Path) -> None:
    https, http, portal = free_port(), free_port(), free_port()
    cfg = EscConfig(
        node_name="esc-ha-0",
        manager=ManagerConfig(
            bind="127.0.0.1",  # type: ignore[arg-type]
            https_port=https,
            http_port=http,
            portal_port=portal,
        ),
    )
    paths = NodePaths(tmp_path)
    nowhere = f"host={tmp_path / 'no-db'} dbname=esc connect_timeout=1"

    async def go() -> list[httpx.Response]:
        stop = asyncio.Event()
        task = asyncio.create_task(
            serve(cfg, paths, FakeVim(), stop, conninfo=nowhere, resolver=no_names)
        )
        try:
            for port in (https, http, portal):
                await until_listening(port)
            async with httpx.AsyncClient(verify=False, timeout=10) as c:
                auth = ("admin", "whatever")
                return [
                    await c.get(f"https://127.0.0.1:{https}/v0/tenants"),
                    await c.get(f"https://127.0.0.1:{portal}/portal/status.json"),
                    await c.post(
                        f"http://127.0.0.1:{http}/v0/tenants?x=1", json={"name": "t"}, auth=auth
                    ),
                    await c.get(f"http://127.0.0.1:{http}/", headers={"Host": "evil@example"}),
                    await c.post(f"https://127.0.0.1:{portal}/", content=b"x" * (2 << 20)),
                ]
        finally:
            stop.set()
            await task

    api, portal_answer, plain, forged, big = asyncio.run(go())
    assert api.status_code == 503  # inactive: before credentials or the database
    assert api.headers["strict-transport-security"] == "max-age=31536000"
    assert portal_answer.headers["strict-transport-security"] == "max-age=31536000"
    assert plain.status_code == 308
    assert plain.headers["location"] == f"https://127.0.0.1:{https}/v0/tenants?x=1"
    assert "strict-transport-security" not in plain.headers
    assert forged.status_code == 308
    assert forged.headers["location"] == f"https://127.0.0.1:{https}/"
    # the portal has the body limit too (in front of everything there), 1 MiB by default
    assert big.status_code == 413
    assert big.headers["strict-transport-security"] == "max-age=31536000"
