"""Hibernation's rules (issue 17) in ContainerCore, with no actor: when an idle
agent's harness is stopped, what a hibernating agent's verbs do, and the
switchboard (Naps) that wakes it on a message."""

from __future__ import annotations

from typing import Any

import pytest

from hyperhive.actors.container_core import Backoff, ContainerCore, Hibernate, Kick, Start, Stop, Verb
from hyperhive.actors.events import MessageSent
from hyperhive.actors.naps import Naps
from hyperhive.actors.snapshots import State
from hyperhive.names import AgentName
from hyperhive.paths import AgentConfig
from hyperhive.settings import Settings

AFTER = 600.0


def up(now: float = 100.0, after: float = AFTER) -> tuple[ContainerCore, int]:
    c = ContainerCore(AgentName("alice"), "builtin", Backoff(), hibernate_after=after)
    c.starting()
    c.started(now)
    assert c.in_turn and not c.idle_due(c.activity, 1e9)  # starting is not idle
    armed = c.turn(False, now)  # its first system recv: idle from now
    return c, c.activity if armed is None else armed


@pytest.mark.parametrize(("events", "check", "due"), [
    ([], ("armed", 100.0 + AFTER), True),  # no turn since the start: due at start + after
    ([], ("armed", 100.0 + AFTER - 1), False),  # not yet
    ([("turn", True, 150.0)], ("armed", 10_000.0), False),  # a check armed before a turn began is stale
    ([("turn", True, 150.0), ("turn", False, 200.0)], ("last", 200.0 + AFTER), True),  # idle since the turn's end
    ([("turn", True, 150.0), ("turn", False, 200.0)], ("last", 199.0 + AFTER), False),
    ([("turn", True, 150.0)], ("current", 10_000.0), False),  # in a turn, however long: never
    ([("verb", "stopping", 0.0)], ("current", 10_000.0), False),  # while a verb runs: never
    ([("stopped", None, 0.0)], ("current", 10_000.0), False),  # a stopped agent does not hibernate
])
def test_when_an_idle_agent_hibernates(events: list[tuple[str, Any, float]], check: tuple[str, float],
                                       due: bool) -> None:
    c, armed = up()
    last = armed
    for kind, arg, at in events:
        if kind == "turn":
            n = c.turn(arg, at)
            assert (n is None) is arg  # a turn's start arms nothing; its end arms the next check
            last = n if n is not None else last
        elif kind == "verb":
            c.begin(arg)
        else:
            c.stopping()
    which, now = check
    activity = {"armed": armed, "last": last, "current": c.activity}[which]
    assert c.idle_due(activity, now) is due


def test_hibernation_off_arms_nothing_and_is_never_due() -> None:
    c, _ = up(after=0.0)
    assert c.turn(False, 200.0) is None and c.idle_check() is None
    assert not c.idle_due(c.activity, 1e9)


@pytest.mark.parametrize(("state", "verb", "steps"), [
    ("running", "hibernate", (Hibernate(),)),
    ("stopped", "hibernate", ()), ("crashed", "hibernate", ()), ("hibernating", "hibernate", ()),
    ("hibernating", "wake", (Start(),)),
    ("running", "wake", ()), ("stopped", "wake", ()),  # a stop the operator asked for is not undone by mail
    ("hibernating", "start", (Start(), Kick("started"))),  # an operator's start wakes it
    ("hibernating", "stop", (Stop(),)),
    ("hibernating", "restart", (Stop(), Start(), Kick("restarted"))),
])
def test_verbs_of_a_hibernating_agent(state: State, verb: Verb, steps: tuple[object, ...]) -> None:
    c, _ = up()
    c.state = state
    assert c.plan(verb, "started" if verb == "start" else None) == steps


def test_a_start_after_hibernation_is_idle_from_then() -> None:
    c, _ = up()
    c.stopping()
    c.hibernated()
    snap = c.snapshot(None, 5000.0, 1e9)
    assert (snap.state, snap.pid, snap.started_at) == ("hibernating", None, None)
    c.starting()
    c.started(5000.0)
    assert not c.idle_due(c.activity, 1e9)  # a harness starting is busy, however slow
    armed = c.turn(False, 5010.0)
    assert armed is not None and c.idle_due(armed, 5010.0 + AFTER) and not c.idle_due(armed, 5010.0 + AFTER - 1)


class Told:
    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def tell(self, method: Any, *args: Any) -> None:
        self.calls.append((method.__name__, args))


def sent(to: str) -> MessageSent:
    return MessageSent({"id": 1, "from": "operator", "to": to, "body": "x", "sent_at": 0.0, "delivered_at": None})


def test_naps_wakes_only_a_hibernating_recipient_and_forwards_turns() -> None:
    naps = Naps()
    alice, bob = Told(), Told()
    naps.register("alice", alice)  # type: ignore[arg-type]
    naps.register("bob", bob)  # type: ignore[arg-type]
    naps.asleep("alice", True)
    for event in (sent("alice"), sent("bob"), sent("carol"), sent("operator")):
        naps.heard(event)
    assert alice.calls == [("wake_agent", ())] and bob.calls == []
    naps.asleep("alice", False)
    naps.heard(sent("alice"))
    assert len(alice.calls) == 1
    naps.turn("bob", True)
    naps.turn("nobody", False)
    assert bob.calls == [("turn_seen", (True,))]
    naps.forget("alice")
    naps.asleep("alice", True)  # a late publish of a forgotten agent: nothing to tell
    naps.heard(sent("alice"))
    assert len(alice.calls) == 1


@pytest.mark.parametrize(("raw", "want"), [("", 600.0), ('{"hibernate_after_seconds": 0}', 0.0),
                                           ('{"hibernate_after_seconds": 30.5}', 30.5)])
def test_agent_json_overrides_the_daemons_setting(raw: str, want: float) -> None:
    cfg = AgentConfig.from_json(raw or "{}")
    assert cfg.hibernate_after(Settings.hibernate_after_seconds) == want
    assert AgentConfig.from_json(cfg.to_json()) == cfg


@pytest.mark.parametrize("bad", ["-1", "true", '"600"', "1e12", "null", "[]"])
def test_a_bad_hibernate_after_is_refused(bad: str) -> None:
    if bad == "null":  # the same as leaving it out
        assert AgentConfig.from_json('{"hibernate_after_seconds": null}').hibernate_after_seconds is None
        return
    with pytest.raises(Exception, match="hibernate_after_seconds must be a number of seconds"):
        AgentConfig.from_json(f'{{"hibernate_after_seconds": {bad}}}')
