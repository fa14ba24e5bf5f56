"""Notes posted to the web UI (issue 12, item 3): the turn loop hands the
driver a `Note` that says whether its author is verified; by default it is
not, since any local process can reach the web UI."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from support import async_wait_for

from hyperhive.errors import BadRequest
from hyperhive.harness.bus import Bus
from hyperhive.harness.claude_prompt import format_prompt
from hyperhive.harness.turns import NOTE_MAX, Note, TurnLoop
from hyperhive.wire import InboxRow


class _ParkedClient:
    """A daemon connection whose system recv never returns: only notes make turns."""

    async def request(self, op: str, **fields: Any) -> dict[str, Any]:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


class _Recorder:
    """A Driver that records its turns (no conversation, no cancel of its own)."""

    name = "recorder"
    needs_login = False
    can_compact = False

    def __init__(self) -> None:
        self.turns: list[list[InboxRow]] = []

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def turn(self, messages: list[InboxRow], emit: Any) -> None:
        self.turns.append(messages)

    def compact_refusal(self) -> str | None:
        return "the recorder keeps no conversation"

    async def compact(self, emit: Any) -> None:
        raise AssertionError("never asked: compact_refusal refuses")

    async def cancel(self) -> bool:
        return False


def test_a_note_is_an_unverified_inbox_row_unless_vouched_for() -> None:
    n = Note.make("a", "hi", 5.0)
    assert isinstance(n, InboxRow)
    assert (n.id, n.from_, n.to, n.body, n.sent_at, n.delivered_at, n.verified) == (0, "operator", "a", "hi", 5.0,
                                                                                   5.0, False)
    assert Note.make("a", "hi", 5.0, verified=True).verified is True
    assert n.to_wire()["from"] == "operator"  # whom a reply goes to; the frame says who wrote it


async def test_the_driver_gets_notes_with_their_verified_flag() -> None:
    driver = _Recorder()
    bus = Bus(None)
    turns = TurnLoop("a", _ParkedClient(), driver, bus)
    stop = asyncio.Event()
    runner = asyncio.create_task(turns.run(stop))
    try:
        turns.note("from anyone")
        await async_wait_for(lambda: len(driver.turns) == 1, what="the first note's turn")
        turns.note("vouched for", verified=True)
        await async_wait_for(lambda: len(driver.turns) == 2, what="the second note's turn")
        turns.note("truthy is not enough", verified="yes")  # type: ignore[arg-type]
        await async_wait_for(lambda: len(driver.turns) == 3, what="the third note's turn")
    finally:
        stop.set()
        await asyncio.wait_for(runner, 10)
    notes = [t[0] for t in driver.turns]
    assert all(isinstance(n, Note) and n.id == 0 for n in notes)
    assert [(n.body, n.verified) for n in notes] == [  # type: ignore[attr-defined]
        ("from anyone", False), ("vouched for", True), ("truthy is not enough", False)]
    assert [e.kind for e in bus.history()].count("note") == 3
    assert 'verified="false"' in format_prompt("a", driver.turns[0])
    assert 'verified="true"' in format_prompt("a", driver.turns[1])


@pytest.mark.parametrize("body", ["", "   \n", "x" * (NOTE_MAX + 1)])
def test_empty_or_huge_notes_are_refused(body: str) -> None:
    turns = TurnLoop("a", _ParkedClient(), _Recorder(), Bus(None))
    with pytest.raises(BadRequest):
        turns.note(body)
