"""`Reconnecting`: requests that wait out a daemon restart, on a real
AsyncClient over a real unix socket whose server goes away and comes back at
the same path (issue 16)."""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from itertools import islice
from pathlib import Path
from typing import Any

import pytest

from hyperhive.client import AsyncClient
from hyperhive.errors import ConnectFailed, ConnectionLost, Forbidden, Unavailable
from hyperhive.harness.reconnect import REISSUE, Reconnecting, delays, may_reissue, ping_until_up


def test_the_backoff_is_250_ms_doubling_to_5_s() -> None:
    assert list(islice(delays(), 8)) == [0.25, 0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0]


@pytest.mark.parametrize(("op", "fields", "exc", "again"), [
    ("send", {}, ConnectFailed("nobody"), True),  # never sent: anything goes again
    ("ask_operator", {}, ConnectFailed("nobody"), True),
    ("recv", {"system": True}, ConnectionLost("lost"), True),  # a parked recv parks again
    ("heartbeat", {}, ConnectionLost("lost"), True),
    ("turn_slot", {}, ConnectionLost("lost"), True),
    ("send", {}, ConnectionLost("lost"), False),  # it may have been stored: not twice
    ("send", {"idempotency_key": "k1"}, ConnectionLost("lost"), True),  # the daemon stores it once
    ("ask_operator", {}, ConnectionLost("lost"), False),
    ("recv", {}, Unavailable("the daemon is shutting down"), True),
    ("recv", {}, Unavailable("this daemon counts no usage"), False),  # an answer, not a restart
    ("recv", {}, Forbidden("no"), False),
])
def test_what_is_reissued(op: str, fields: dict[str, Any], exc: Any, again: bool) -> None:
    assert may_reissue(op, fields, exc) is again


def test_the_harness_own_ops_are_all_reissued() -> None:
    assert {"recv", "heartbeat", "turn_slot", "turn_done", "grants", "ping", "recent"} <= REISSUE
    assert not {"send", "ask_operator", "request_spawn", "propose_config", "start", "kill"} & REISSUE


class Daemon:
    """A JSON-lines server at a fixed path that can go away and come back:
    ``recv`` parks until ``deliver``; every other op answers ``{"op": op}``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()
        self.seen: list[dict[str, Any]] = []
        self.parked: list[tuple[asyncio.StreamWriter, int]] = []
        self.answer = True  # False: every request is taken and never answered

    async def up(self) -> None:
        self.path.unlink(missing_ok=True)
        self.server = await asyncio.start_unix_server(self._serve, str(self.path))

    async def down(self) -> None:
        """As a daemon killed: the listener and every connection gone at once."""
        assert self.server is not None
        self.server.close()
        for w in list(self.writers):
            w.transport.abort()
        await self.server.wait_closed()
        self.server = None
        self.parked.clear()

    async def deliver(self, body: str) -> None:
        for w, req_id in self.parked:
            w.write(json.dumps({"id": req_id, "ok": True, "messages": [body]}).encode() + b"\n")
        self.parked.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.add(writer)
        try:
            while line := await reader.readline():
                req = json.loads(line)
                self.seen.append(req)
                if not self.answer:
                    continue
                if req["op"] == "recv":
                    self.parked.append((writer, req["id"]))
                else:
                    writer.write(json.dumps({"id": req["id"], "ok": True, "op": req["op"]}).encode() + b"\n")
        except ConnectionError:
            pass
        finally:
            self.writers.discard(writer)


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="hh-rc-", dir="/tmp"))  # short: a unix socket path is at most 107 bytes
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
async def daemon(sock_dir: Path) -> AsyncIterator[Daemon]:
    d = Daemon(sock_dir / "hive.sock")
    await d.up()
    try:
        yield d
    finally:
        if d.server is not None:
            await d.down()


def fast(path: Path, retries: list[str] | None = None, **kw: Any) -> Reconnecting:
    """A client retrying 2 ms doubling to 10 ms (the harness's: 250 ms to 5 s); the
    code of each retry's cause goes to ``retries``."""
    def on_retry(op: str, exc: Any, delay: float) -> None:
        if retries is not None:
            retries.append(exc.code)

    return Reconnecting(AsyncClient(path), first=0.002, cap=0.01, on_retry=on_retry, **kw)


async def until(pred: Any, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not pred():
            await asyncio.sleep(0.001)


async def test_a_parked_recv_parks_again_on_the_next_daemon(daemon: Daemon) -> None:
    retries: list[str] = []
    c = fast(daemon.path, retries)
    try:
        recv = asyncio.create_task(c.request("recv", system=True))
        await until(lambda: len(daemon.parked) == 1)
        await daemon.down()
        await until(lambda: retries.count("connect_failed") >= 3)  # retries meet no daemon meanwhile
        assert not recv.done()
        await daemon.up()
        await until(lambda: len(daemon.parked) == 1)  # re-issued on the new one
        await daemon.deliver("m1")
        assert (await recv)["messages"] == ["m1"]
        assert [r["op"] for r in daemon.seen] == ["recv", "recv"] and daemon.seen[1]["system"] is True
    finally:
        await c.close()


async def test_a_request_while_no_daemon_goes_out_once_it_is_back(daemon: Daemon) -> None:
    retries: list[str] = []
    c = fast(daemon.path, retries)
    try:
        await daemon.down()
        send = asyncio.create_task(c.request("send", to="b", body="x"))
        await until(lambda: len(retries) >= 3)
        assert set(retries) == {"connect_failed"} and not send.done()
        await daemon.up()
        assert (await send)["op"] == "send"
        assert [r["op"] for r in daemon.seen] == ["send"]  # never sent before: sent once
    finally:
        await c.close()


async def test_a_send_lost_on_the_way_is_not_sent_twice_unless_it_has_a_key(daemon: Daemon) -> None:
    c = fast(daemon.path)
    try:
        daemon.answer = False  # the daemon dies with both requests in flight
        plain = asyncio.create_task(c.request("send", to="b", body="x"))
        keyed = asyncio.create_task(c.request("send", to="b", body="y", idempotency_key="k1"))
        await until(lambda: len(daemon.seen) == 2)
        await daemon.down()
        daemon.answer = True
        with pytest.raises(ConnectionLost):
            await plain  # whether it was stored is unknown: the caller hears so
        await daemon.up()
        assert (await keyed)["op"] == "send"
        assert sorted((r["op"], r.get("idempotency_key") or "") for r in daemon.seen) == [
            ("send", ""), ("send", "k1"), ("send", "k1")]
    finally:
        await c.close()


async def test_a_limit_ends_the_retries_and_close_ends_them_at_once(sock_dir: Path) -> None:
    c = fast(sock_dir / "nobody.sock", limit=0.04)
    with pytest.raises(ConnectFailed):
        await c.request("recv")
    again: list[str] = []
    forever = fast(sock_dir / "nobody.sock", again)
    task = asyncio.create_task(forever.request("recv"))
    await until(lambda: len(again) >= 3)
    assert not task.done()
    await forever.close()
    with pytest.raises(ConnectFailed, match="closed"):
        await task


async def test_retries_end_when_the_socket_dir_is_gone(sock_dir: Path) -> None:
    """The agent was purged (or its state dir removed): no daemon comes back there."""
    run = sock_dir / "run"
    run.mkdir()
    retries: list[str] = []
    c = fast(run / "hive.sock", retries)
    task = asyncio.create_task(c.request("recv", system=True))
    await until(lambda: len(retries) >= 3)
    assert not task.done()  # no daemon yet: waiting for one
    run.rmdir()
    with pytest.raises(ConnectFailed, match="is gone"):
        await asyncio.wait_for(task, 5)
    await c.close()


def test_hive_mcp_start_waits_for_the_daemon_then_gives_up(sock_dir: Path) -> None:
    slept: list[float] = []
    with pytest.raises(ConnectFailed):
        ping_until_up(sock_dir / "nobody.sock", limit=3.0, sleep=slept.append)
    assert slept == [0.25, 0.5, 1.0, 2.0]  # the next, 4 s, would pass the limit
