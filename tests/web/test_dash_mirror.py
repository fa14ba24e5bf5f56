"""The dashboard's snapshot mirror and the sections built from it, against a
Coordinator stand-in that answers ``ls`` when the test says so, on a real temp
state dir. The browser test that revives a tombstone and purges it lost about
one run in six: a section built from before a container came or went (a
heartbeat's, or a push that took the old mirror while another caller's ``ls``
was on its way) reached the page after the push that followed the change."""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import threading
from pathlib import Path
from typing import Any

import pytest

from hyperhive.names import AgentName
from hyperhive.paths import AgentConfig, StatePaths
from hyperhive.web.dashboard.mirror import SnapshotMirror
from hyperhive.web.dashboard.state import StateSource


def snap(name: str) -> dict[str, Any]:
    return {"name": name, "role": "agent", "state": "running", "transient": None, "driver": "builtin",
            "sandboxed": True, "pid": 40, "restarts": 0, "last_exit": None, "started_at": None}


class Ls:
    """``Coordinator.ls`` as ``bridge.call`` uses it; ``held``: the replies wait for ``answer``."""

    def __init__(self, names: list[str], held: bool = False) -> None:
        self.names = names
        self.held = held
        self.pending: list[cf.Future[Any]] = []
        self.asked = 0

    def defer(self, *args: Any, reply: cf.Future[Any], **kwargs: Any) -> None:
        self.asked += 1
        reply.set_running_or_notify_cancel()
        if self.held:
            self.pending.append(reply)
        else:
            reply.set_result([snap(n) for n in self.names])

    def answer(self) -> None:
        for reply in self.pending:
            reply.set_result([snap(n) for n in self.names])
        self.pending.clear()


class Actor:
    def __init__(self, **methods: Any) -> None:
        self.__dict__.update(methods)


class Stats:
    def defer(self, *args: Any, reply: cf.Future[Any], **kwargs: Any) -> None:
        reply.set_running_or_notify_cancel()
        reply.set_result({"parked": {}, "undelivered": {}})


async def until(pred: Any) -> None:
    async with asyncio.timeout(5):
        while not pred():
            await asyncio.sleep(0.001)


async def test_a_caller_waits_for_the_ls_on_its_way_not_the_old_mirror() -> None:
    ls = Ls(["alice"])
    mirror = SnapshotMirror(Actor(ls=ls))  # type: ignore[arg-type]
    assert [s.name for s in await mirror.snapshots()] == ["alice"]
    ls.held, ls.names = True, ["alice", "erin"]
    mirror.note("container.added", {"name": "erin"})
    first = asyncio.ensure_future(mirror.snapshots())  # sees it stale: asks
    await until(lambda: ls.pending)
    second = asyncio.ensure_future(mirror.snapshots())  # the old mirror lacks erin: it waits
    await asyncio.sleep(0.01)
    assert not second.done()
    ls.answer()
    assert [s.name for s in await first] == [s.name for s in await second] == ["alice", "erin"]
    assert ls.asked == 2  # one ask for both


async def test_an_event_during_the_ask_asks_again() -> None:
    ls = Ls(["alice"], held=True)
    mirror = SnapshotMirror(Actor(ls=ls))  # type: ignore[arg-type]
    got = asyncio.ensure_future(mirror.snapshots())
    await until(lambda: ls.pending)
    ls.names = ["alice", "erin"]
    mirror.note("container.added", {"name": "erin"})  # after the first ask was answered by the actor, perhaps
    ls.names = ["alice"]  # that first answer: from before erin
    ls.answer()
    await until(lambda: ls.pending)
    ls.names = ["alice", "erin"]
    ls.answer()
    assert [s.name for s in await got] == ["alice", "erin"]


@pytest.fixture
def paths(tmp_path: Path) -> StatePaths:
    p = StatePaths(tmp_path / "state")
    for name in ("alice", "erin"):
        p.create_agent(AgentName(name), AgentConfig())
    return p


async def test_a_tombstones_section_that_raced_a_revive_is_built_again(paths: StatePaths) -> None:
    """erin is revived while a state request lists the tombstones (a heartbeat: it
    started before the push for ``container.added``, and may reach the page after
    it). What it answers must not show erin as a tombstone."""
    ls = Ls(["alice"])
    loop = asyncio.get_running_loop()
    source: StateSource
    revived = threading.Event()

    def usage_of(name: AgentName) -> None:  # called on the executor thread, mid-observation
        if name == "alice" and not revived.is_set():
            ls.names = ["alice", "erin"]
            loop.call_soon_threadsafe(source.note_container, "container.added", {"name": "erin"})
            loop.call_soon_threadsafe(revived.set)
            revived.wait(5)

    source = StateSource(paths, Actor(ls=ls), Actor(stats=Stats()), None, None,  # type: ignore[arg-type]
                         usage_of=usage_of)
    out = await source.sections(["containers", "tombstones"])
    assert revived.is_set()
    assert [t["name"] for t in out["tombstones"]] == []
    assert sorted(c["name"] for c in out["containers"]) == ["alice", "erin"]


def test_what_makes_a_build_stale() -> None:
    """A container added or removed, a tombstone purged: not a container's state change."""
    mirror = SnapshotMirror(Actor(ls=Ls([])))  # type: ignore[arg-type]
    assert mirror.note("tombstone.purged", {"name": "erin"}) is None and mirror.changes == 1
    assert mirror.note("container.state", snap("erin")) is None and mirror.changes == 1
    assert mirror.note("container.removed", {"name": "erin"}) == "erin" and mirror.changes == 2 and mirror.stale
