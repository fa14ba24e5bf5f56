"""The turn loop's system recv, on a real AsyncClient over a real unix socket:
a lost connection is reported as one (and reconnected), an error the daemon
answered is reported as that error."""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from support import async_wait_for

from hyperhive.client import AsyncClient
from hyperhive.harness.bus import Bus
from hyperhive.harness.turns import ERROR_PAUSE, LOST_PAUSE, TurnLoop
from hyperhive.wire import InboxRow

LOST = "lost the daemon connection; reconnecting"


class _Recorder:
    name = "recorder"

    async def turn(self, messages: list[InboxRow], emit: Any) -> None:
        pass


class FakeDaemon:
    """A JSON-lines server whose n-th connection's recv is answered by
    ``plan[n]``: an error dict to answer with, None to close the connection,
    or "park" to never answer."""

    def __init__(self, plan: list[dict[str, str] | str | None]) -> None:
        self.plan = plan
        self.connections = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        step = self.plan[min(self.connections, len(self.plan) - 1)]
        self.connections += 1
        try:
            while line := await reader.readline():
                req = json.loads(line)
                if step is None:
                    return
                if isinstance(step, dict) and req["op"] == "recv":
                    writer.write(json.dumps({"id": req["id"], "ok": False, "error": step}).encode() + b"\n")
                    await writer.drain()
        finally:
            writer.close()


@pytest.fixture
async def run_loop() -> AsyncIterator[Callable[[FakeDaemon], Any]]:
    d = Path(tempfile.mkdtemp(prefix="hh-tr-", dir="/tmp"))
    started: list[tuple[asyncio.Server, AsyncClient, asyncio.Event, asyncio.Task[None]]] = []

    async def start(daemon: FakeDaemon) -> Bus:
        server = await asyncio.start_unix_server(daemon.handle, path=str(d / "hive.sock"))
        client = AsyncClient(d / "hive.sock")
        await client.connect(deadline=5)
        bus = Bus(None)
        stop = asyncio.Event()
        turns = TurnLoop("a", client, _Recorder(), bus, lost_pause=0.01)  # (the harness's: LOST_PAUSE)
        started.append((server, client, stop, asyncio.create_task(turns.run(stop))))
        return bus

    yield start
    for server, client, stop, task in started:
        stop.set()
        await asyncio.wait_for(task, 10)
        await client.close()
        server.close()
        await server.wait_closed()
    shutil.rmtree(d, ignore_errors=True)


def _errors(bus: Bus) -> list[str]:
    return [e.data["error"] for e in bus.history() if e.kind == "error"]


async def test_an_error_the_daemon_answered_is_reported_as_that_error(run_loop: Any) -> None:
    daemon = FakeDaemon([{"code": "unavailable", "message": "no reply within 30s"}, "park"])
    bus = await run_loop(daemon)
    await async_wait_for(lambda: _errors(bus), interval=0.002, what="the recv error on the bus")
    assert _errors(bus)[0] == "recv failed: unavailable: no reply within 30s"
    assert LOST not in _errors(bus)
    assert daemon.connections == 1  # an answer is no reason to reconnect


async def test_a_lost_connection_is_reported_and_reconnected(run_loop: Any) -> None:
    daemon = FakeDaemon([None, "park"])
    bus = await run_loop(daemon)
    await async_wait_for(lambda: daemon.connections == 2, interval=0.002, what="the harness reconnecting")
    assert _errors(bus) == [LOST]


def test_the_pauses_after_a_failed_recv() -> None:
    assert (LOST_PAUSE, ERROR_PAUSE) == (0.5, 1.0)
    turns = TurnLoop("a", None, _Recorder(), Bus(None))
    assert (turns.lost_pause, turns.error_pause) == (LOST_PAUSE, ERROR_PAUSE)
