"""The in-flight table (issue 16): what a harness took and has not finished is
handed back when it goes away, and only then."""

from __future__ import annotations

from hyperhive.web.tables.inflight import InFlight


def test_a_finished_turn_keeps_nothing() -> None:
    f = InFlight()
    f.took("a", [1, 2])
    f.turn_started("a")
    f.turn_done("a")
    assert f.lost("a") == [] and f.interrupted("a") == 0


def test_a_harness_gone_mid_turn_or_before_it_hands_them_back_once() -> None:
    f = InFlight()
    f.took("a", [1, 2])
    f.turn_started("a")
    assert f.lost("a") == [1, 2]
    assert f.lost("a") == []  # once
    assert f.interrupted("a") == 2 and f.interrupted("a") == 0
    f.took("b", [7])  # its turn never started (a budget, the F44 queue)
    assert f.lost("b") == [7]


def test_a_turn_done_before_any_turn_started_keeps_the_messages() -> None:
    f = InFlight()
    f.took("a", [3])
    f.turn_done("a")  # a compaction's slot, say: not the turn on them
    assert f.holding("a") == [3]
    f.took("a", [3, 4])  # taken twice (a requeue raced): kept once
    assert f.lost("a") == [3, 4]


def test_agents_are_apart() -> None:
    f = InFlight()
    f.took("a", [1])
    f.took("b", [2])
    assert f.lost("a") == [1] and f.holding("b") == [2]


def test_a_message_that_ends_its_harness_every_time_is_delivered_again_once() -> None:
    f = InFlight()
    f.took("a", [5, 6])
    f.turn_started("a")
    assert f.lost("a") == [5, 6]  # the first harness died on them: once more
    f.took("a", [5, 6, 7])
    f.turn_started("a")
    assert f.lost("a") == [7]  # died again: 5 and 6 are not delivered a third time
