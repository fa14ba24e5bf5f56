"""The event bus: ring buffer, the events sqlite, subscribers, derived state."""

from __future__ import annotations

from pathlib import Path

import pytest

from hyperhive.harness.bus import Bus, derive_state, turn_open
from hyperhive.store.events_db import EventLog, EventRow


@pytest.mark.parametrize(
    ("kinds", "state", "open_"),
    [
        ([], "idle", False),
        (["ready", "turn_start", "text", "tool_use"], "thinking", True),
        (["turn_start", "text", "turn_end"], "idle", False),
        (["turn_start", "turn_end", "compact_requested", "compact_start", "compacting"], "compacting", True),
        (["compact_start", "compact_end"], "idle", False),
        (["turn_start", "text", "ready"], "idle", False),  # the harness died mid-turn, a new one started
        (["turn_start", "stopped"], "idle", False),
        (["error", "note", "cancelled"], "idle", False),
    ],
)
def test_state_from_events(kinds: list[str], state: str, open_: bool) -> None:
    assert derive_state(kinds) == state
    assert turn_open(kinds) is open_


def test_ring_sqlite_and_subscribers(tmp_path: Path) -> None:
    bus = Bus(EventLog.in_state_dir(tmp_path), ring_size=5)
    seen: list[EventRow] = []

    def broken(row: EventRow) -> None:
        raise RuntimeError("a viewer that went away")

    unsubscribe = bus.subscribe(seen.append)
    bus.subscribe(broken)
    bus.publish("turn_start", messages=[])
    assert bus.state == "thinking"
    for i in range(6):
        bus.publish("text", text=f"t{i}", event="not structlog's")
    assert bus.state == "thinking"
    assert [e.data.get("text") for e in bus.history()] == ["t1", "t2", "t3", "t4", "t5"]
    assert [e.id for e in seen] == list(range(1, 8))
    assert [e.id for e in bus.since(5)] == [6, 7]
    unsubscribe()
    bus.publish("turn_end")
    assert len(seen) == 7 and bus.state == "idle"
    bus.close()

    # A restarted harness sees the tail again, and its state.
    again = Bus(EventLog.in_state_dir(tmp_path), ring_size=3)
    assert [e.kind for e in again.history()] == ["text", "text", "turn_end"]
    assert again.state == "idle"
    assert again.publish("ready").id == 9
    again.close()
    log = EventLog.in_state_dir(tmp_path)
    assert log.count() == 9
    log.close()


def test_without_a_store_ids_still_grow() -> None:
    bus = Bus(None)
    assert [bus.publish("text", text="x").id for _ in range(3)] == [1, 2, 3]
