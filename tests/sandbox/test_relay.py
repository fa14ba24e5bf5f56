"""TCP → unix relays and the no-follow connector, on real sockets."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs
from support import async_wait_for

from hyperhive.sandbox.relay import (
    bound_port,
    live_connections,
    nofollow_unix_connector,
    start_tcp_relay,
    stop_server,
    unix_connector,
)


@pytest.fixture(autouse=True)
def _no_error_logged(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Nothing here may make asyncio log an error (an exception out of a connection)."""
    yield
    errors = [r for r in caplog.records if r.levelno >= 40]
    assert not errors, [f"{r.name}: {r.getMessage()}" for r in errors]


class UnixPeer:
    """A unix socket server that records what it got and answers on cue."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.eof = asyncio.Event()
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None

    async def start(self, path: Path) -> UnixPeer:
        self.server = await asyncio.start_unix_server(self._handle, path=str(path))
        return self

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        try:
            while data := await reader.read(65536):
                self.received += data
                if data.startswith(b"echo:"):
                    writer.write(data[5:])
                    await writer.drain()
            self.eof.set()
            # Half-closed by the peer: we may still answer.
            writer.write(b"after-eof:" + bytes(self.received[-5:]))
            await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for w in self.writers:
            w.close()
        await self.server.wait_closed()


@pytest.fixture
async def peer(tmp_path: Path) -> AsyncIterator[UnixPeer]:
    p = await UnixPeer().start(tmp_path / "peer.sock")
    yield p
    await p.stop()


async def test_relay_pipes_both_ways_and_passes_on_a_half_close(tmp_path: Path, peer: UnixPeer) -> None:
    relay = await start_tcp_relay("127.0.0.1", 0, unix_connector(str(tmp_path / "peer.sock")), "test")
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", bound_port(relay))
        writer.write(b"echo:hello")
        assert await reader.readexactly(5) == b"hello"
        big = os.urandom(1 << 20)
        writer.write(big)
        writer.write(b"tail!")
        writer.write_eof()
        await asyncio.wait_for(peer.eof.wait(), 10)
        assert bytes(peer.received) == b"echo:hello" + big + b"tail!"
        assert await reader.read() == b"after-eof:tail!"  # the answer after our EOF, then EOF
        writer.close()
        await async_wait_for(lambda: live_connections(relay) == 0, what="the relay connection to end")
    finally:
        await stop_server(relay)


async def test_a_failed_connect_closes_the_tcp_connection_and_is_logged(tmp_path: Path) -> None:
    relay = await start_tcp_relay("127.0.0.1", 0, unix_connector(str(tmp_path / "nobody.sock")), "api")
    try:
        with capture_logs() as logs:
            reader, writer = await asyncio.open_connection("127.0.0.1", bound_port(relay))
            try:
                assert await asyncio.wait_for(reader.read(), 10) == b""
            except ConnectionResetError:
                pass  # aborted: just as closed
            writer.close()
            await async_wait_for(lambda: live_connections(relay) == 0, what="the connection to end")
        [rec] = [r for r in logs if r["event"] == "relay.connect_failed"]
        assert rec["name"] == "api" and "FileNotFoundError" in rec["error"]
        # The relay keeps serving (and failing) later connections.
        r2, w2 = await asyncio.open_connection("127.0.0.1", bound_port(relay))
        try:
            assert await asyncio.wait_for(r2.read(), 10) == b""
        except ConnectionResetError:
            pass
        w2.close()
    finally:
        await stop_server(relay)


async def test_the_peer_closing_mid_splice_ends_the_connection(tmp_path: Path, peer: UnixPeer) -> None:
    tasks_before = len(asyncio.all_tasks())
    relay = await start_tcp_relay("127.0.0.1", 0, unix_connector(str(tmp_path / "peer.sock")), "test")
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", bound_port(relay))
        writer.write(b"echo:x")
        assert await reader.readexactly(1) == b"x"
        assert live_connections(relay) == 1
        peer.writers[0].transport.abort()  # the unix side vanishes
        assert await asyncio.wait_for(reader.read(), 10) == b""  # passed on as EOF
        assert live_connections(relay) == 1  # half-closed: our side may still send
        writer.close()
        await async_wait_for(lambda: live_connections(relay) == 0, what="the relay connection to end")
    finally:
        await stop_server(relay)
    await async_wait_for(lambda: len(asyncio.all_tasks()) <= tasks_before, what="no task left")


async def test_the_client_closing_mid_splice_ends_the_connection(tmp_path: Path, peer: UnixPeer) -> None:
    relay = await start_tcp_relay("127.0.0.1", 0, unix_connector(str(tmp_path / "peer.sock")), "test")
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", bound_port(relay))
        writer.write(b"echo:y")
        assert await reader.readexactly(1) == b"y"
        writer.transport.abort()  # RST from the TCP side
        await asyncio.wait_for(peer.eof.wait(), 10)
        await async_wait_for(lambda: live_connections(relay) == 0, what="the relay connection to end")
    finally:
        await stop_server(relay)


async def test_stop_server_ends_live_connections(tmp_path: Path, peer: UnixPeer) -> None:
    tasks_before = len(asyncio.all_tasks())
    relay = await start_tcp_relay("127.0.0.1", 0, unix_connector(str(tmp_path / "peer.sock")), "test")
    reader, writer = await asyncio.open_connection("127.0.0.1", bound_port(relay))
    writer.write(b"echo:z")
    assert await reader.readexactly(1) == b"z"
    await stop_server(relay)
    assert live_connections(relay) == 0
    try:
        assert await asyncio.wait_for(reader.read(), 10) == b""
    except ConnectionResetError:
        pass
    writer.close()
    await asyncio.wait_for(peer.eof.wait(), 10)
    await async_wait_for(lambda: len(asyncio.all_tasks()) <= tasks_before, what="no task left")


# --- nofollow_unix_connector ------------------------------------------------------


async def _ping(connect: object) -> bytes:
    reader, writer = await connect()  # type: ignore[operator]
    writer.write(b"echo:ping")
    data = await reader.readexactly(4)
    writer.close()
    return data


async def test_nofollow_connects_to_a_real_socket(tmp_path: Path, peer: UnixPeer) -> None:
    assert await _ping(nofollow_unix_connector(str(tmp_path), "peer.sock", os.getuid())) == b"ping"
    assert await _ping(nofollow_unix_connector(str(tmp_path), "peer.sock", None)) == b"ping"


async def test_nofollow_refuses_a_symlink_to_another_socket(tmp_path: Path, peer: UnixPeer) -> None:
    agent_dir = tmp_path / "agent"
    agent_dir.mkdir()
    (agent_dir / "web.sock").symlink_to(tmp_path / "peer.sock")
    with pytest.raises(ConnectionRefusedError, match="symlink"):
        await nofollow_unix_connector(str(agent_dir), "web.sock", None)()
    assert not peer.writers  # nothing reached the other socket


async def test_nofollow_refuses_a_symlinked_directory(tmp_path: Path, peer: UnixPeer) -> None:
    (tmp_path / "run").symlink_to(tmp_path)
    with pytest.raises(PermissionError, match="not a plain directory"):
        await nofollow_unix_connector(str(tmp_path / "run"), "peer.sock", None)()
    assert not peer.writers


async def test_nofollow_refuses_a_regular_file_and_a_missing_name(tmp_path: Path) -> None:
    (tmp_path / "web.sock").write_text("not a socket")
    with pytest.raises(ConnectionRefusedError, match="not a socket"):
        await nofollow_unix_connector(str(tmp_path), "web.sock", None)()
    with pytest.raises(ConnectionRefusedError, match="does not exist"):
        await nofollow_unix_connector(str(tmp_path), "absent.sock", None)()
    with pytest.raises(ConnectionRefusedError, match="does not exist"):
        await nofollow_unix_connector(str(tmp_path / "absent"), "web.sock", None)()


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")
async def test_nofollow_refuses_a_socket_of_another_owner(tmp_path: Path) -> None:
    other = await UnixPeer().start(tmp_path / "other.sock")
    try:
        os.chown(tmp_path / "other.sock", 54321, 54321)
        with pytest.raises(PermissionError, match="owned by uid 54321"):
            await nofollow_unix_connector(str(tmp_path), "other.sock", 0)()
        assert await _ping(nofollow_unix_connector(str(tmp_path), "other.sock", 54321)) == b"ping"
    finally:
        await other.stop()


async def test_nofollow_refuses_a_hard_link(tmp_path: Path, peer: UnixPeer) -> None:
    agent_dir = tmp_path / "agent"
    agent_dir.mkdir()
    os.link(tmp_path / "peer.sock", agent_dir / "web.sock")
    with pytest.raises(PermissionError, match="links"):
        await nofollow_unix_connector(str(agent_dir), "web.sock", None)()


async def test_nofollow_connects_to_the_inode_it_checked(tmp_path: Path, peer: UnixPeer) -> None:
    """The connect goes through /proc/self/fd: a long directory path is fine too."""
    deep = tmp_path / ("d" * 100) / ("e" * 100)
    deep.mkdir(parents=True)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    cwd = os.getcwd()
    os.chdir(deep)
    try:
        s.bind("deep.sock")  # the full path would be over the 108-byte sun_path limit
    finally:
        os.chdir(cwd)
    s.listen(1)
    s.setblocking(False)
    try:
        connect = nofollow_unix_connector(str(deep), "deep.sock", None)
        reader, writer = await connect()
        conn, _ = await asyncio.get_running_loop().sock_accept(s)
        writer.write(b"x")
        await writer.drain()
        assert await asyncio.get_running_loop().sock_recv(conn, 1) == b"x"
        conn.close()
        writer.close()
    finally:
        s.close()


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "a\0b"])
def test_nofollow_wants_a_single_file_name(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError):
        nofollow_unix_connector(str(tmp_path), name, None)


async def test_an_eof_reaches_a_tls_side_as_its_close_and_the_splice_ends(tmp_path: Path) -> None:
    # TLS has no half-close in asyncio: the EOF of the unix side closes the TLS side whole
    # (left open, a connection whose peer went away would stay open for ever: issue 18's relay).
    from hyperhive.agent_tls import ca_pem, server_context
    from hyperhive.agent_wire import client_context
    from hyperhive.sandbox.relay import splice

    tls_got: list[bytes] = []
    tls_done = asyncio.Event()

    async def tls_peer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        tls_got.append(await reader.read())  # to the TLS close
        tls_done.set()
        writer.close()

    ctx = server_context(tmp_path, "127.0.0.1")
    server = await asyncio.start_server(tls_peer, "127.0.0.1", 0, ssl=ctx)
    port = server.sockets[0].getsockname()[1]
    up_r, up_w = await asyncio.open_connection("127.0.0.1", port, ssl=client_context(ca_pem(tmp_path)),
                                               server_hostname="127.0.0.1")
    assert not up_w.can_write_eof()
    left, right = socket.socketpair()
    a_r, a_w = await asyncio.open_unix_connection(sock=left)
    spliced = asyncio.ensure_future(splice(a_r, a_w, up_r, up_w, abort_on_cancel=True))
    right.sendall(b"hello over tls")
    right.shutdown(socket.SHUT_WR)  # the unix side's EOF
    await asyncio.wait_for(tls_done.wait(), 10)
    assert tls_got == [b"hello over tls"]
    await asyncio.wait_for(spliced, 10)  # both ways ended: the splice is over
    right.close()
    server.close()
    await server.wait_closed()
