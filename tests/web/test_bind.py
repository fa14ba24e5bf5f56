"""F21: bind_with_retry against real sockets on loopback."""

from __future__ import annotations

import ctypes
import errno
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs
from tornado.httpclient import AsyncHTTPClient
from tornado.httpserver import HTTPServer
from tornado.web import Application, RequestHandler

from hyperhive.net import bind_once, bind_with_retry, bind_with_retry_async, retry_delays


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
    """The production schedule on a clock the test steps: each wait advances it,
    and the holder lets go once a second of it has passed."""
    port = held.getsockname()[1]
    clock, waits = [0.0], []

    def sleep(wait: float) -> None:
        waits.append(wait)
        clock[0] += wait
        if clock[0] >= 1.0 and held.fileno() != -1:
            held.close()  # the holder's time: a second

    with capture_logs() as logs:
        socks = bind_with_retry(port, "127.0.0.1", sleep=sleep)
    try:
        assert held.fileno() == -1
        assert [s.getsockname()[1] for s in socks] == [port]
        retries = [e for e in logs if e["event"] == "bind.retry"]
        # 0.25 + 0.5 + 1.0: bound on the try after the release.
        assert len(retries) == 3 and waits == [0.25, 0.5, 1.0] and clock[0] == 1.75
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


_CAP_NET_BIND_SERVICE = 10
_CAPS_V3 = 0x20080522  # _LINUX_CAPABILITY_VERSION_3: two 32-bit words per set


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def _on_a_thread_without_net_bind_service(fn: Callable[[], None]) -> None:
    """Run ``fn`` on a thread whose effective capabilities lack CAP_NET_BIND_SERVICE.
    Linux keeps capabilities per thread (capset(2) with pid 0 is the caller's
    thread), so root's other threads keep theirs and the kernel refuses this
    one's bind below 1024 as it would refuse a user's."""
    libc = ctypes.CDLL(None, use_errno=True)
    failed: list[BaseException] = []

    def run() -> None:
        try:
            head, data = _CapHeader(_CAPS_V3, 0), (_CapData * 2)()
            if libc.capget(ctypes.byref(head), data) != 0:
                raise OSError(ctypes.get_errno(), "capget")
            data[0].effective &= ~(1 << _CAP_NET_BIND_SERVICE)
            if libc.capset(ctypes.byref(head), data) != 0:
                raise OSError(ctypes.get_errno(), "capset")
            fn()
        except BaseException as exc:  # noqa: BLE001 - raised again on the test's thread
            failed.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout=30)
    assert not thread.is_alive()
    if failed:
        raise failed[0]


def test_a_permission_error_fails_at_once() -> None:
    if int(Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text()) <= 80:
        pytest.skip("port 80 is not privileged on this host")
    elapsed: list[float] = []

    def bind_80() -> None:
        t0 = time.monotonic()
        try:
            bind_with_retry(80, "127.0.0.1")
        finally:
            elapsed.append(time.monotonic() - t0)

    with capture_logs() as logs, pytest.raises(PermissionError) as info:
        _on_a_thread_without_net_bind_service(bind_80)
    assert info.value.errno == errno.EACCES
    assert elapsed[0] < 0.2
    assert [e["event"] for e in logs] == ["bind.failed"]


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
            await asyncio.sleep(0)  # a turn of the loop each: a blocked loop counts none

    ticker = asyncio.ensure_future(tick())
    with pytest.raises(OSError):
        await bind_with_retry_async(port, "127.0.0.1", delays=[0.01, 0.01])
    ticker.cancel()
    assert ticks >= 10
