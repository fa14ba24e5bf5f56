"""TCP → unix socket relays (asyncio), and the splice both sides of the
sandbox's plumbing share.

Inside an agent's sandbox there is no network but its own loopback, so the
harness listens on 127.0.0.1 ports (where tools expect an HTTP proxy and the
model API) and relays each connection to a unix socket the daemon bound in
the agent's run dir. The daemon uses the same relay the other way round, to
expose an agent's web UI socket on a host port: that socket lives in a
directory the agent can write, so `nofollow_unix_connector` reaches it
without ever following a link the agent planted (the daemon may be root).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import stat
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

import hyperhive.logs as logs

__all__ = [
    "Connect",
    "bound_port",
    "live_connections",
    "register_server",
    "nofollow_unix_connector",
    "splice",
    "start_tcp_relay",
    "stop_server",
    "track_connection",
    "unix_connector",
]

_log = logs.get("hyperhive.relay")

Connect = Callable[[], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]

_CHUNK = 1 << 16

# Each server's live connection tasks, so `stop_server` can end them (an
# asyncio.Server on 3.11 leaves its accepted connections running on close).
_LIVE: weakref.WeakKeyDictionary[asyncio.Server, set[asyncio.Task[None]]] = weakref.WeakKeyDictionary()


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> bool:
    """Copy until EOF, then pass the EOF on: a half-close where ``dst`` has one (TCP, a
    unix socket), else the whole close (TLS has no half-close in asyncio: left open, a
    connection whose peer went away would stay open for ever). False when a side failed."""
    try:
        while data := await src.read(_CHUNK):
            dst.write(data)
            await dst.drain()
        if dst.is_closing():
            return True
        if dst.can_write_eof():
            dst.write_eof()
        else:
            dst.close()  # its buffer is flushed first; the other way then ends too
        return True
    except (OSError, RuntimeError):
        return False


async def _close(*writers: asyncio.StreamWriter) -> None:
    for w in writers:  # all closed before any wait: a cancel during the wait leaves none open
        w.close()
    for w in writers:
        with contextlib.suppress(Exception):
            await w.wait_closed()


async def splice(a_reader: asyncio.StreamReader, a_writer: asyncio.StreamWriter,
                 b_reader: asyncio.StreamReader, b_writer: asyncio.StreamWriter,
                 abort_on_cancel: bool = False) -> None:
    """Pipe bytes both ways until both directions have ended, then close both.

    EOF one way is passed on as a half-close (``write_eof``; a TLS side, which has
    none, is closed) and the other way keeps flowing; an error either way aborts
    both, so neither side is left waiting on a peer that is gone. Cancelling this
    closes both too; with ``abort_on_cancel`` (a TLS side: its close waits on its
    peer) it aborts them first.
    """
    tasks = {asyncio.ensure_future(_pipe(a_reader, b_writer)), asyncio.ensure_future(_pipe(b_reader, a_writer))}
    pending = set(tasks)
    try:
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            if not all(t.result() for t in done):
                a_writer.transport.abort()
                b_writer.transport.abort()
    finally:
        for t in pending:
            t.cancel()
        if pending:
            if abort_on_cancel:
                a_writer.transport.abort()
                b_writer.transport.abort()
            await asyncio.gather(*pending, return_exceptions=True)
        await _close(a_writer, b_writer)


def track_connection(server_tasks: set[asyncio.Task[None]]) -> Callable[[], None]:
    """Register the running task as one of a server's connections; returns its un-register."""
    task = asyncio.current_task()
    assert task is not None
    server_tasks.add(task)
    return lambda: server_tasks.discard(task)


Serve = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def capped_handler(serve: Serve, tasks: set[asyncio.Task[None]], max_connections: int,
                   refuse: Callable[[asyncio.StreamWriter], None], failed: str, abort_on_error: bool,
                   **context: Any) -> Serve:
    """A per-connection handler for the daemon's agent-facing servers (proxy,
    web relay): past ``max_connections`` live ones a connection is handed to
    ``refuse`` (the agent cannot spend the daemon's file descriptors); each
    served one is tracked for `stop_server`, and nothing raises out of it
    (``failed`` is logged, with ``context``)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(tasks) >= max_connections:
            refuse(writer)
            return
        done = track_connection(tasks)
        try:
            await serve(reader, writer)
        except asyncio.CancelledError:
            pass  # stop_server; a task ending cancelled makes asyncio (3.11) log an error
        except Exception as err:  # noqa: BLE001 - never out of a connection
            _log.warning(failed, **context, error=f"{type(err).__name__}: {err}")
            if abort_on_error:
                writer.transport.abort()
        finally:
            writer.close()
            done()

    return handle


def register_server(server: asyncio.Server, tasks: set[asyncio.Task[None]]) -> None:
    _LIVE[server] = tasks


def live_connections(server: asyncio.Server) -> int:
    """How many connections of ``server`` are still being served."""
    return len(_LIVE.get(server, ()))


async def stop_server(server: asyncio.Server) -> None:
    """Stop listening and end every live connection of ``server`` (relay or proxy)."""
    server.close()
    tasks = list(_LIVE.get(server, ()))
    for t in tasks:
        t.cancel()
    if tasks:
        await asyncio.gather(*tasks, return_exceptions=True)
    await server.wait_closed()


async def start_tcp_relay(host: str, port: int, connect: Connect, name: str) -> asyncio.Server:
    """Listen on ``host:port`` (0: any free port, see `bound_port`); relay each
    connection to what ``connect()`` opens. A failed connect closes that TCP
    connection and logs ``relay.connect_failed``; nothing raises out of a
    connection."""
    tasks: set[asyncio.Task[None]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        done = track_connection(tasks)
        try:
            try:
                up_reader, up_writer = await connect()
            except Exception as err:  # noqa: BLE001 - any failure is this connection's alone
                _log.warning("relay.connect_failed", name=name, error=f"{type(err).__name__}: {err}")
                writer.transport.abort()
                return
            await splice(reader, writer, up_reader, up_writer)
        except asyncio.CancelledError:
            pass  # `stop_server`; a task that ends cancelled makes asyncio (3.11) log an error
        except Exception as err:  # noqa: BLE001 - never out of a connection
            _log.warning("relay.failed", name=name, error=f"{type(err).__name__}: {err}")
            writer.transport.abort()
        finally:
            done()

    server = await asyncio.start_server(handle, host, port)
    register_server(server, tasks)
    return server


def bound_port(server: asyncio.Server) -> int:
    return int(server.sockets[0].getsockname()[1])


def unix_connector(path: str) -> Connect:
    """Connect to the unix socket at ``path`` (a path the caller trusts)."""

    async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_unix_connection(path)

    return connect


_DIR_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _open_socket_inode(directory: str, filename: str, owner_uid: int | None) -> int:
    """An O_PATH fd of the socket ``directory/filename``, refusing links and impostors."""
    where = os.path.join(directory, filename)
    try:
        dfd = os.open(directory, _DIR_FLAGS)
    except FileNotFoundError:
        raise ConnectionRefusedError(f"{directory} does not exist") from None
    except OSError as err:  # ELOOP / ENOTDIR: a link or not a directory
        raise PermissionError(f"{directory} is not a plain directory (a symlink?): {err.strerror}") from None
    try:
        fd = os.open(filename, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
    except FileNotFoundError:
        raise ConnectionRefusedError(f"{where} does not exist") from None
    finally:
        os.close(dfd)
    try:
        st = os.fstat(fd)
        # O_PATH|O_NOFOLLOW opens a symlink itself: it is then no socket.
        if not stat.S_ISSOCK(st.st_mode):
            kind = "a symlink" if stat.S_ISLNK(st.st_mode) else "not a socket"
            raise ConnectionRefusedError(f"{where} is {kind}; refusing to connect")
        if owner_uid is not None and st.st_uid != owner_uid:
            raise PermissionError(f"{where} is owned by uid {st.st_uid}, not {owner_uid}; refusing to connect")
        if st.st_nlink != 1:  # a hard link to some other socket
            raise PermissionError(f"{where} has {st.st_nlink} links; refusing to connect")
    except BaseException:
        os.close(fd)
        raise
    return fd


def nofollow_unix_connector(directory: str, filename: str, owner_uid: int | None) -> Connect:
    """Connect to the socket ``directory/filename`` without following a link.

    ``directory`` is opened O_NOFOLLOW, ``filename`` looked up in it O_PATH|
    O_NOFOLLOW, the inode checked (a socket, owned by ``owner_uid`` when given,
    one link), and the connect goes to ``/proc/self/fd/N``: that exact inode,
    whatever the name points at by then.
    """
    if not filename or "/" in filename or "\0" in filename or filename in (".", ".."):
        raise ValueError(f"{filename!r} is not a single file name")

    async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        fd = _open_socket_inode(directory, filename, owner_uid)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, f"/proc/self/fd/{fd}")
        except BaseException:
            sock.close()
            raise
        finally:
            os.close(fd)
        return await asyncio.open_unix_connection(sock=sock)

    return connect
