"""F21: bind_with_retry against real sockets on loopback."""

from __future__ import annotations

import errno
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs
from tornado.httpclient import AsyncHTTPClient
from tornado.httpserver import HTTPServer
from tornado.web import Application, RequestHandler

from hyperhive.net import bind_once, bind_with_retry, bind_with_retry_async, retry_delays

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def held() -> Iterator[socket.socket]:
    """A listening socket on a free loopback port (the "old" listener)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    yield s
    s.close()


def test_delay_schedule() -> None:
    delays = retry_delays()
    assert delays == [0.25, 0.5, 1.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0]
    assert len(delays) + 1 == 12  # tries
    assert sum(delays) == 17.75


def test_binds_once_the_holder_lets_go_after_one_second(held: socket.socket) -> None:
    port = held.getsockname()[1]
    released = threading.Event()

    def release_after_a_second() -> None:
        threading.Event().wait(1.0)  # the holder's time, not a wait for luck
        held.close()
        released.set()

    t0 = time.monotonic()
    threading.Thread(target=release_after_a_second, daemon=True).start()
    with capture_logs() as logs:
        socks = bind_with_retry(port, "127.0.0.1")
    elapsed = time.monotonic() - t0
    try:
        assert released.is_set()
        assert [s.getsockname()[1] for s in socks] == [port]
        retries = [e for e in logs if e["event"] == "bind.retry"]
        # 0.25 + 0.5 (+ 1.0): bound on the try after the release.
        assert 2 <= len(retries) <= 3
        assert 1.0 <= elapsed < 1.75 + 1.0
    finally:
        for s in socks:
            s.close()


def test_gives_up_after_the_last_try(held: socket.socket) -> None:
    port = held.getsockname()[1]
    with capture_logs() as logs, pytest.raises(OSError) as info:
        bind_with_retry(port, "127.0.0.1", delays=[0.01, 0.01, 0.01])
    assert info.value.errno == errno.EADDRINUSE
    assert [e["event"] for e in logs] == ["bind.retry"] * 3 + ["bind.failed"]


def test_an_address_not_on_this_host_fails_at_once() -> None:
    # 192.0.2.1 (TEST-NET-1) is on no interface: EADDRNOTAVAIL; bind sends nothing.
    t0 = time.monotonic()
    with capture_logs() as logs, pytest.raises(OSError) as info:
        bind_with_retry(0, "192.0.2.1")
    assert info.value.errno == errno.EADDRNOTAVAIL
    assert time.monotonic() - t0 < 0.2
    assert [e["event"] for e in logs] == ["bind.failed"]


_UNPRIVILEGED = """
import errno, sys, time
import hyperhive.logs as logs
from hyperhive.net import bind_with_retry
logs.configure(sys.stderr)
t0 = time.monotonic()
try:
    bind_with_retry(80, "127.0.0.1")
except PermissionError as exc:
    print(errno.errorcode[exc.errno], round(time.monotonic() - t0, 3))
"""


def test_a_permission_error_fails_at_once() -> None:
    if int(Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text()) <= 80:
        pytest.skip("port 80 is not privileged on this host")
    # Root may bind port 80: the child runs without CAP_NET_BIND_SERVICE
    # (setpriv, util-linux), so the kernel refuses it as it would refuse a user.
    drop = ["setpriv", "--bounding-set", "-net_bind_service"] if os.geteuid() == 0 else []
    if drop and shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is needed to drop the capability as root")
    out = subprocess.run(
        [*drop, sys.executable, "-c", _UNPRIVILEGED], capture_output=True, text=True, timeout=30,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert out.returncode == 0, out.stderr
    code, seconds = out.stdout.split()
    assert code == "EACCES"
    assert float(seconds) < 0.2
    assert '"bind.failed"' in out.stderr and "bind.retry" not in out.stderr


def test_port_zero_on_every_family_shares_one_port() -> None:
    socks = bind_once(0, "localhost")
    try:
        assert len({s.getsockname()[1] for s in socks}) == 1
    finally:
        for s in socks:
            s.close()


class _Hello(RequestHandler):
    def get(self) -> None:
        self.write("hello")


async def test_tornado_serves_on_the_sockets(held: socket.socket) -> None:
    port = held.getsockname()[1]
    held.close()
    socks = await bind_with_retry_async(port, "127.0.0.1")
    server = HTTPServer(Application([("/", _Hello)]))
    server.add_sockets(socks)
    try:
        resp = await AsyncHTTPClient().fetch(f"http://127.0.0.1:{port}/")
        assert resp.body == b"hello"
    finally:
        server.stop()
        await server.close_all_connections()


async def test_async_retry_does_not_block_the_loop(held: socket.socket) -> None:
    import asyncio
    port = held.getsockname()[1]
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    ticker = asyncio.ensure_future(tick())
    with pytest.raises(OSError):
        await bind_with_retry_async(port, "127.0.0.1", delays=[0.1, 0.1])
    ticker.cancel()
    assert ticks >= 10
