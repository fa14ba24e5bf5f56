"""F20: sticky agent web ports, the pure choice and the PortAllocator actor on
a real state dir."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from hyperhive.actors.bridge import call
from hyperhive.actors.ports import PortAllocator, read_port_file
from hyperhive.actors.ports_core import PORT_SPAN, choose_port, fnv1a_32, hash_port
from hyperhive.errors import BadName, UnknownAgent
from hyperhive.paths import StatePaths

BASE = 8100


def colliding_pair(base: int = BASE, span: int = PORT_SPAN) -> tuple[str, str]:
    """Two valid agent names that hash to the same port (found by brute force)."""
    seen: dict[int, str] = {}
    for i in itertools.count():
        name = f"agent-{i}"
        port = hash_port(name, base, span)
        if port in seen:
            return seen[port], name
        seen[port] = name
    raise AssertionError("unreachable")


@pytest.mark.parametrize(
    ("data", "want"),
    [(b"", 0x811C9DC5), (b"a", 0xE40C292C), (b"foobar", 0xBF9CF968)],
)
def test_fnv1a_reference_vectors(data: bytes, want: int) -> None:
    assert fnv1a_32(data) == want


def test_hash_port_is_in_range() -> None:
    ports = {hash_port(f"n{i}", BASE) for i in range(5000)}
    assert min(ports) >= BASE and max(ports) < BASE + PORT_SPAN


@pytest.mark.parametrize(
    ("claimed_offsets", "want_offset", "found"),
    [
        ((), 0, True),  # free: the hash itself
        ((0,), 1, True),  # hash claimed: the next one
        ((0, 1, 2), 3, True),
        ((1,), 0, True),  # a claim past the hash does not matter
    ],
)
def test_choose_port_probes_forward(claimed_offsets: tuple[int, ...], want_offset: int, found: bool) -> None:
    h = hash_port("coder", BASE)
    claimed = {BASE + (h - BASE + o) % PORT_SPAN for o in claimed_offsets}
    assert choose_port("coder", claimed, BASE) == (BASE + (h - BASE + want_offset) % PORT_SPAN, found)


def test_choose_port_wraps_inside_the_range() -> None:
    span = 10
    name = next(n for n in (f"w{i}" for i in range(1000)) if hash_port(n, BASE, span) == BASE + span - 1)
    assert choose_port(name, {BASE + span - 1}, BASE, span) == (BASE, True)


def test_choose_port_exhausted_returns_the_hash() -> None:
    span = 5
    every = set(range(BASE, BASE + span))
    assert choose_port("coder", every, BASE, span) == (hash_port("coder", BASE, span), False)


# --- the actor --------------------------------------------------------------

def make_agent(paths: StatePaths, name: str) -> Path:
    d = paths.agents / name
    d.mkdir(parents=True)
    return d


@pytest.fixture
def paths(tmp_path: Path) -> StatePaths:
    return StatePaths(tmp_path / "state")


@pytest.fixture
async def allocator(paths: StatePaths) -> AsyncIterator[Any]:
    proxy = PortAllocator.start(paths, BASE).proxy()
    yield proxy
    proxy.actor_ref.stop()


async def test_colliding_names_get_different_ports_that_survive_a_restart(paths: StatePaths) -> None:
    a, b = colliding_pair()
    first = PortAllocator.start(paths, BASE).proxy()
    make_agent(paths, a)  # spawned one after the other
    pa = await call(first.port_for, a)
    make_agent(paths, b)
    pb = await call(first.port_for, b)
    first.actor_ref.stop()
    assert pa == hash_port(a, BASE) == hash_port(b, BASE)
    assert pb == pa + 1
    assert read_port_file(paths.agents / a / "port") == pa
    assert read_port_file(paths.agents / b / "port") == pb

    # A new allocator (a daemon restart) asked in the other order: the port
    # files win, so nobody swaps.
    again = PortAllocator.start(paths, BASE).proxy()
    assert await call(again.port_for, b) == pb
    assert await call(again.port_for, a) == pa
    again.actor_ref.stop()


async def test_an_agent_without_a_port_file_keeps_its_hash_port(paths: StatePaths, allocator: Any) -> None:
    old, new = colliding_pair()
    make_agent(paths, old)  # predates port files
    make_agent(paths, new)
    assert await call(allocator.port_for, new) == hash_port(old, BASE) + 1
    assert await call(allocator.port_for, old) == hash_port(old, BASE)


async def test_concurrent_requests_never_share_a_port(paths: StatePaths, allocator: Any) -> None:
    a, b = colliding_pair()
    for n in (a, b):
        make_agent(paths, n)
    ports = await asyncio.gather(call(allocator.port_for, a), call(allocator.port_for, b))
    assert len(set(ports)) == 2


async def test_exhausted_range_warns_and_returns_the_hash(paths: StatePaths) -> None:
    span = 3
    # Three other agents claim the whole range through their port files.
    for i, port in enumerate(range(BASE, BASE + span)):
        (make_agent(paths, f"full-{i}") / "port").write_text(f"{port}\n")
    make_agent(paths, "late")
    proxy = PortAllocator.start(paths, BASE, span).proxy()
    try:
        with capture_logs() as logs:
            port = await call(proxy.port_for, "late")
    finally:
        proxy.actor_ref.stop()
    assert port == hash_port("late", BASE, span)
    assert [e for e in logs if e["event"] == "ports.exhausted" and e["log_level"] == "warning"]
    assert not (paths.agents / "late" / "port").exists()  # a freed slot can still be found later


async def test_a_garbled_port_file_is_replaced(paths: StatePaths, allocator: Any) -> None:
    (make_agent(paths, "coder") / "port").write_text("eighty\n")
    port = await call(allocator.port_for, "coder")
    assert port == hash_port("coder", BASE)
    assert read_port_file(paths.agents / "coder" / "port") == port


@pytest.mark.parametrize("name", ["..", "a/../..", "/etc", "m1nd/..", "x\x00"])
async def test_bad_names_are_refused(paths: StatePaths, allocator: Any, name: str) -> None:
    with pytest.raises(BadName):
        await call(allocator.port_for, name)


async def test_unknown_agent_is_refused(paths: StatePaths, allocator: Any) -> None:
    with pytest.raises(UnknownAgent):
        await call(allocator.port_for, "ghost")
    assert not (paths.agents / "ghost").exists()
