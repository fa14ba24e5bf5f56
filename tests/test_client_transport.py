"""hyperhive.client on real unix sockets: the transport family (nothing
listening, a connection closed mid-request, no answer in time) apart from the
errors a server answered."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hyperhive import client
from hyperhive.client import AsyncClient
from hyperhive.errors import (
    ConnectFailed,
    ConnectionLost,
    HiveError,
    TimedOut,
    TransportError,
    Unavailable,
    UnknownAgent,
)

UNAVAILABLE = {"code": "unavailable", "message": "no reply within 30s"}


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="hh-ct-", dir="/tmp"))  # short: unix socket paths are capped
    yield d
    shutil.rmtree(d, ignore_errors=True)


class OneShot:
    """A listening socket whose accepted connections ``answer(request)``
    handles on a thread: the reply line, or None to close without one."""

    def __init__(self, path: Path, answer: Callable[[dict[str, object]], dict[str, object] | None]) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen()
        self.answer = answer
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:  # closed by stop()
                return
            with conn, conn.makefile("rb") as f:
                while line := f.readline():
                    reply = self.answer(json.loads(line))
                    if reply is None:
                        break
                    conn.sendall(json.dumps(reply).encode() + b"\n")

    def stop(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.thread.join(timeout=5)
        assert not self.thread.is_alive()


@pytest.fixture
def serve(sock_dir: Path) -> Iterator[Callable[..., Path]]:
    servers: list[OneShot] = []

    def start(answer: Callable[[dict[str, object]], dict[str, object] | None]) -> Path:
        path = sock_dir / f"s{len(servers)}.sock"
        servers.append(OneShot(path, answer))
        return path

    yield start
    for s in servers:
        s.stop()


def echo_ok(req: dict[str, object]) -> dict[str, object]:
    return {"id": req["id"], "ok": True, "op": req["op"]}


def refuse(req: dict[str, object]) -> dict[str, object]:
    return {"id": req["id"], "ok": False, "error": UNAVAILABLE}


# --- the blocking client --------------------------------------------------------

def test_no_socket_file_is_connect_failed(sock_dir: Path) -> None:
    with pytest.raises(ConnectFailed, match="no daemon is listening on"):
        client.request(sock_dir / "absent.sock", "ping", timeout=5)


def test_a_socket_nobody_listens_on_is_connect_failed(sock_dir: Path) -> None:
    path = sock_dir / "bound.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as bound:
        bound.bind(str(path))  # bound, never listening: connect is refused
        with pytest.raises(ConnectFailed, match="no daemon is listening on"):
            client.request(path, "ping", timeout=5)


def test_a_server_that_closes_without_answering_is_connection_lost(serve: Callable[..., Path]) -> None:
    path = serve(lambda req: None)
    with pytest.raises(ConnectionLost, match="closed the connection"):
        client.request(path, "ping", timeout=5)


def test_a_server_that_never_answers_is_timed_out(sock_dir: Path) -> None:
    path = sock_dir / "mute.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as mute:
        mute.bind(str(path))
        mute.listen()  # the kernel accepts for it; nobody ever reads or answers
        with pytest.raises(TimedOut, match=r"within 0.02s"):
            client.request(path, "ping", timeout=0.02)


def test_an_error_the_server_answered_is_that_error(serve: Callable[..., Path]) -> None:
    path = serve(refuse)
    with pytest.raises(Unavailable) as exc:
        client.request(path, "ping", timeout=5)
    assert not isinstance(exc.value, TransportError)
    assert (exc.value.message, exc.value.request_id) == ("no reply within 30s", 1)


def test_an_answer_is_returned(serve: Callable[..., Path]) -> None:
    path = serve(echo_ok)
    assert client.request(path, "ping", timeout=5, x=1) == {"id": 1, "ok": True, "op": "ping"}


# --- the async client -------------------------------------------------------------

async def test_async_connect_gives_up_with_connect_failed(sock_dir: Path) -> None:
    c = AsyncClient(sock_dir / "absent.sock")
    with pytest.raises(ConnectFailed, match=r"could not reach .* within 0.01s"):
        await c.connect(deadline=0.01, retry_delay=0.002)  # tries at 0, 2, 6, 14 ms


async def test_async_a_closed_connection_fails_every_request_in_flight(serve: Callable[..., Path]) -> None:
    def answer(req: dict[str, object]) -> dict[str, object] | None:
        if req["op"] == "recv":
            return {"id": -1, "ok": True}  # an answer to no request: the recv stays parked
        return None  # the next request: close the connection

    c = AsyncClient(serve(answer))
    await c.connect(deadline=5)
    try:
        parked = asyncio.ensure_future(c.request("recv"))
        with pytest.raises(ConnectionLost):
            await c.request("ping")
        with pytest.raises(ConnectionLost):
            await asyncio.wait_for(parked, 5)
    finally:
        await c.close()


async def test_async_errors_the_server_answered(serve: Callable[..., Path]) -> None:
    def answer(req: dict[str, object]) -> dict[str, object]:
        if req["op"] == "ls":
            return {"id": req["id"], "ok": False, "error": {"code": "unknown_agent", "message": "no agent 'x'"}}
        return refuse(req) if req["op"] == "recv" else echo_ok(req)

    c = AsyncClient(serve(answer))
    try:
        with pytest.raises(Unavailable) as exc:
            await c.request("recv")
        assert not isinstance(exc.value, TransportError)
        with pytest.raises(UnknownAgent, match="no agent 'x'"):
            await c.request("ls")
        assert (await c.request("ping"))["op"] == "ping"  # the connection stays usable
    finally:
        await c.close()


def test_every_transport_error_is_still_a_hive_error() -> None:
    # callers that report any failure (`hive` CLI, the MCP tools) catch HiveError
    for cls in (ConnectFailed, ConnectionLost, TimedOut):
        assert issubclass(cls, HiveError)
