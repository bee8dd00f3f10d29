"""Password hashing, basic-auth parsing, the fake VIM and the control client (no database)."""

from __future__ import annotations

import asyncio
import base64
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from esc.errors import ConfigError, ServiceError
from esc.manager.auth import parse_basic
from esc.manager.control import ManagerControl
from esc.manager.users import (
    ScryptCost,
    check_password,
    check_user_name,
    hash_password,
    verify_password,
)
from esc.manager.vim import FakeVim, VimError, VmSpec

SMALL = ScryptCost(n=1024, r=8, p=1)


def test_hash_roundtrip_and_salt() -> None:
    h1 = hash_password("secret password", cost=SMALL)
    h2 = hash_password("secret password", cost=SMALL)
    assert h1 != h2  # per-user random salt
    assert h1.startswith("scrypt$1024$8$1$")
    assert verify_password("secret password", h1)
    assert not verify_password("secret passwore", h1)
    assert not verify_password("secret password", "garbage")
    assert not verify_password("x", "scrypt$a$b$c$d$e")
    assert not verify_password("x", "md5$1$1$1$AA==$AA==")


def test_user_and_password_rules() -> None:
    assert check_user_name("ops@example") == "ops@example"
    for bad in ("", "-x", "a b", "a" * 64):
        with pytest.raises(ConfigError, match="user"):
            check_user_name(bad)
    with pytest.raises(ConfigError, match="password"):
        check_password("short")
    with pytest.raises(ConfigError, match="control"):
        check_password("long enough\n")


def basic(text: str) -> str:
    return "Basic " + base64.b64encode(text.encode()).decode()


def test_parse_basic() -> None:
    assert parse_basic(basic("admin:pw:with:colons")) == ("admin", "pw:with:colons")
    assert parse_basic(basic("admin:")) == ("admin", "")
    assert parse_basic("basic " + base64.b64encode(b"a:b").decode()) == ("a", "b")
    for bad in (None, "", "Bearer xyz", "Basic", "Basic !!!", basic("nocolon"), basic(":pw")):
        assert parse_basic(bad) is None


def test_fake_vim_is_idempotent_by_name() -> None:
    async def scenario() -> FakeVim:
        vim = FakeVim(delay_s=0.01, fail_names=frozenset({"bad"}))
        spec = VmSpec("g", "img", "flavor")
        await asyncio.gather(*(vim.create_vm("d1", "vm1", spec) for _ in range(5)))
        await vim.create_vm("d1", "vm2", spec)
        assert await vim.vm_exists("d1", "vm1")
        assert not await vim.vm_exists("d2", "vm1")
        with pytest.raises(VimError):
            await vim.create_vm("d1", "bad", spec)
        await vim.delete_vm("d1", "vm2")
        await vim.delete_vm("d1", "vm2")  # idempotent
        return vim

    vim = asyncio.run(scenario())
    assert vim.creations["vm1"] == 1
    assert vim.create_calls["vm1"] == 5
    assert vim.names() == {"vm1"}
    assert vim.deletions["vm2"] == 1


def read_request(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        data += conn.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    while len(body) < length:
        body += conn.recv(65536)
    return head + b"\r\n\r\n" + body


@pytest.fixture
def fake_control(tmp_path: Path) -> Iterator[tuple[Path, list[bytes]]]:
    """A unix socket answering each request with the next canned HTTP response."""
    path = tmp_path / "manager.sock"
    canned = [
        (b"200 OK", b'{"active": true, "healthy": false, "detail": "x y"}'),
        (b"503 Unavailable", b'{"detail": "database is down"}'),
        (b"200 OK", b"nope!"),
        (b"200 OK", b"{}"),
    ]
    answers = [
        b"HTTP/1.1 %s\r\nContent-Length: %d\r\n\r\n%s" % (status, len(body), body)
        for status, body in canned
    ]
    requests: list[bytes] = []
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(path))
    srv.listen(4)

    def serve() -> None:
        for answer in answers:
            conn, _ = srv.accept()
            with conn:
                requests.append(read_request(conn))
                conn.sendall(answer)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield path, requests
    srv.close()


def test_control_client(fake_control: tuple[Path, list[bytes]], tmp_path: Path) -> None:
    path, requests = fake_control
    ctl = ManagerControl(path, timeout=2.0)
    st = ctl.status()
    assert (st.active, st.healthy, st.detail) == (True, False, "x y")
    assert requests[0].startswith(b"GET /control/status ")
    with pytest.raises(ServiceError, match="503 database is down"):
        ctl.activate("esc-ha-0")
    assert b'{"primary": "esc-ha-0"}' in requests[1]
    with pytest.raises(ServiceError, match="not JSON"):
        ctl.deactivate("esc-ha-1", None)
    with pytest.raises(ServiceError, match="malformed"):
        ctl.status()
    with pytest.raises(ServiceError, match=r"manager\.sock"):
        ManagerControl(tmp_path / "none" / "manager.sock", timeout=0.5).status()


def test_listeners(tmp_path: Path) -> None:
    from esc.manager.main import listen_tcp, listen_unix  # noqa: PLC0415

    sock = listen_tcp("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP  # asyncio then sets TCP_NODELAY per connection
    finally:
        sock.close()
    sock6 = listen_tcp("::1", 0)
    try:
        # (dual stack only matters for "::"; Linux marks a socket bound to ::1 v6-only itself)
        assert sock6.getsockname()[0] == "::1"
    finally:
        sock6.close()
    path = tmp_path / "run" / "manager.sock"
    path.parent.mkdir()
    path.write_text("stale")
    usock = listen_unix(path)
    try:
        assert path.stat().st_mode & 0o777 == 0o600
    finally:
        usock.close()
