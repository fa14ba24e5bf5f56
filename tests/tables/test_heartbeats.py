"""hyperhive.web.tables.heartbeats (F41): what an agent is doing, from its
harness's beats; an agent that missed three beats is unresponsive."""

from __future__ import annotations

import pytest

from hyperhive.web.tables.heartbeats import MISSED_BEATS, REPORTED, Beat, Heartbeats, activity_of

INTERVAL = 2.0
LATE = MISSED_BEATS * INTERVAL  # the last age that still counts as alive


class Clock:
    """A clock the test moves by hand (Heartbeats takes any ``() -> float``)."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# --- activity_of -----------------------------------------------------------------

@pytest.mark.parametrize(
    ("beat", "running", "age", "queued", "want"),
    [
        # not running: no activity, whatever was reported last
        (None, False, 0.0, False, None),
        ("thinking", False, 0.0, False, None),
        ("idle", False, 100.0, False, None),
        ("thinking", False, 0.0, True, "queued"),  # a queued agent shows as queued even so
        # running, no beat yet
        (None, True, 0.0, False, "starting"),
        (None, True, 0.0, True, "starting"),
        # running, beats on time: what it reported
        ("idle", True, 0.0, False, "idle"),
        ("thinking", True, 1.0, False, "thinking"),
        ("compacting", True, 1.0, False, "compacting"),
        ("idle", True, LATE, False, "idle"),  # exactly three intervals: not missed yet
        # missed beats
        ("idle", True, LATE + 0.001, False, "unresponsive"),
        ("thinking", True, 60.0, False, "unresponsive"),
        ("idle", True, LATE + 0.001, True, "unresponsive"),  # a dead agent is not "queued"
        # queued (F44): only an otherwise idle agent shows it
        ("idle", True, 0.0, True, "queued"),
        ("thinking", True, 0.0, True, "thinking"),
        ("compacting", True, 0.0, True, "compacting"),
    ],
)
def test_activity_of(beat: str | None, running: bool, age: float, queued: bool, want: str | None) -> None:
    now = 5000.0
    b = None if beat is None else Beat(beat, now - age)
    assert activity_of(b, running, now, INTERVAL, queued) == want


def test_missed_beats_scale_with_the_interval() -> None:
    beat = Beat("idle", 0.0)
    assert activity_of(beat, True, 3 * 10.0, 10.0) == "idle"
    assert activity_of(beat, True, 3 * 10.0 + 0.01, 10.0) == "unresponsive"
    assert activity_of(beat, True, 3 * 0.5 + 0.01, 0.5) == "unresponsive"


def test_the_reported_states_and_the_threshold() -> None:
    assert REPORTED == ("idle", "thinking", "compacting")
    assert MISSED_BEATS == 3


# --- Heartbeats --------------------------------------------------------------------

def test_record_says_when_the_reported_state_changed() -> None:
    beats = Heartbeats(INTERVAL, Clock())
    steps = [("idle", True), ("idle", False), ("thinking", True), ("thinking", False), ("compacting", True),
             ("idle", True)]
    assert [beats.record("a", state) for state, _ in steps] == [changed for _, changed in steps]
    assert beats.record("b", "idle") is True  # per agent: b's first beat is a change


def test_view_reports_the_activity_and_the_age_of_the_last_beat() -> None:
    clock = Clock()
    beats = Heartbeats(INTERVAL, clock)
    assert beats.view("a", running=True) == {"activity": "starting", "heartbeat_age": None}
    beats.record("a", "thinking")
    clock.now += 1.23456
    assert beats.view("a", running=True) == {"activity": "thinking", "heartbeat_age": 1.235}
    assert beats.view("a", running=False) == {"activity": None, "heartbeat_age": 1.235}
    assert beats.view("b", running=True) == {"activity": "starting", "heartbeat_age": None}


def test_an_agent_that_misses_three_beats_is_unresponsive_until_it_beats_again() -> None:
    clock = Clock()
    beats = Heartbeats(INTERVAL, clock)
    beats.record("a", "idle")
    clock.now += LATE
    assert beats.view("a", running=True)["activity"] == "idle"
    clock.now += 0.01
    assert beats.view("a", running=True) == {"activity": "unresponsive", "heartbeat_age": round(LATE + 0.01, 3)}
    # Its next beat brings it back; the state it reports did not change.
    assert beats.record("a", "idle") is False
    assert beats.view("a", running=True) == {"activity": "idle", "heartbeat_age": 0.0}


def test_each_beat_restarts_the_count() -> None:
    clock = Clock()
    beats = Heartbeats(INTERVAL, clock)
    for _ in range(10):  # beats every 5 s, each within 3 x 2 s of the one before
        beats.record("a", "thinking")
        clock.now += 5.0
        assert beats.view("a", running=True)["activity"] == "thinking"


def test_queued_shows_only_for_an_idle_agent() -> None:
    beats = Heartbeats(INTERVAL, Clock())
    beats.record("a", "idle")
    beats.record("b", "thinking")
    assert beats.view("a", running=True, queued=True)["activity"] == "queued"
    assert beats.view("b", running=True, queued=True)["activity"] == "thinking"
    assert beats.view("a", running=True)["activity"] == "idle"


def test_forget_drops_the_agent_and_only_it() -> None:
    clock = Clock()
    beats = Heartbeats(INTERVAL, clock)
    beats.record("a", "thinking")
    beats.record("b", "idle")
    beats.forget("a")
    beats.forget("nobody")  # forgetting an unknown agent is no error
    assert beats.view("a", running=True) == {"activity": "starting", "heartbeat_age": None}
    assert beats.view("b", running=True)["activity"] == "idle"
    assert beats.record("a", "thinking") is True  # a fresh start: its first beat is a change again
