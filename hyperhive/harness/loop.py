"""`hive harness`: the turn loop inside each container (F26).

Wait for inbox messages with the system-level recv (wait_seconds None: the
daemon's default), run one turn of the driver with the batch, record every
event, repeat. A lost daemon connection is retried, never fatal.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
from pathlib import Path
from typing import Any

import hyperhive.logs as logs
from hyperhive.client import AsyncClient
from hyperhive.errors import HiveError, Unavailable
from hyperhive.harness.builtin import BuiltinDriver
from hyperhive.wire import InboxRow

__all__ = ["die_with_parent", "run_harness"]

_log = logs.get("hyperhive.harness")
PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Get SIGTERM when the daemon (our parent) dies, however it dies."""
    parent = os.getppid()
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def make_driver(name: str, driver: str, socket_path: str) -> Any:
    if driver == "builtin":
        return BuiltinDriver(name, socket_path)
    raise ValueError(f"unknown driver {driver!r}")


async def run_harness(name: str, socket_path: str, state_dir: Path, driver_name: str) -> None:
    logs.bind_thread(agent=name)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def emit(kind: str, **data: Any) -> None:
        _log.info("harness.event", kind=kind, **data)

    client = AsyncClient(socket_path)
    await client.connect(deadline=60)
    driver = make_driver(name, driver_name, socket_path)
    await driver.open()
    emit("ready", driver=driver_name, pid=os.getpid(), state_dir=str(state_dir))
    stopping = asyncio.create_task(stop.wait())
    try:
        while not stop.is_set():
            recv = asyncio.create_task(client.request("recv", system=True))
            await asyncio.wait({recv, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not recv.done():
                recv.cancel()
                break
            try:
                resp = recv.result()
            except Unavailable:
                emit("error", error="lost the daemon connection; reconnecting")
                await asyncio.sleep(0.5)
                await client.connect(deadline=60)
                continue
            except HiveError as exc:
                emit("error", error=f"{exc.code}: {exc.message}")
                await asyncio.sleep(1.0)
                continue
            messages = [InboxRow.from_wire(m) for m in resp["messages"]]
            if not messages:
                continue
            emit("turn_start", messages=[m.id for m in messages])
            try:
                await driver.turn(messages, emit)
            except Exception as exc:  # noqa: BLE001 - a bad turn never ends the loop
                _log.exception("harness.turn_failed")
                emit("error", error=f"{type(exc).__name__}: {exc}")
            emit("turn_end")
    finally:
        stopping.cancel()
        await driver.close()
        await client.close()
        emit("stopped")
