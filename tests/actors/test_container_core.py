"""ContainerCore, the ContainerActor's decisions, with no actor or backend:
backoff, exit texts, verb plans, exit reports, restarts after a crash, snapshots."""

from __future__ import annotations

import json
import signal

import pytest

from hyperhive.actors.container_core import (
    STABLE_AFTER,
    Backoff,
    ContainerCore,
    Destroy,
    Kick,
    Killed,
    Start,
    Step,
    Stop,
    Verb,
    describe_exit,
    kick_text,
    killed_message,
)
from hyperhive.actors.events import ContainerCrash, ContainerKilled
from hyperhive.actors.snapshots import State
from hyperhive.names import AgentName


def core(state: State = "stopped", name: str = "alice", base: float = 1.0, cap: float = 30.0) -> ContainerCore:
    c = ContainerCore(AgentName(name), "builtin", Backoff(base, cap))
    c.state = state
    return c


def running(now: float = 100.0, name: str = "alice") -> tuple[ContainerCore, int]:
    c = core(name=name)
    gen = c.starting()
    c.started(now)
    return c, gen


# --- Backoff ------------------------------------------------------------------------
@pytest.mark.parametrize(("runs", "delays"), [
    ([0.0], [1.0]),  # the first crash waits the base
    ([0.0, 0.5, 2.0, 3.0, 1.0], [1.0, 2.0, 4.0, 8.0, 16.0]),  # doubling while it keeps crashing
    ([0.0] * 7, [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]),  # capped
    ([0.0, 0.0, 0.0, STABLE_AFTER], [1.0, 2.0, 4.0, 1.0]),  # 60 s up: reset to the base
    ([0.0, 0.0, STABLE_AFTER - 0.01], [1.0, 2.0, 4.0]),  # just short of it: no reset
    ([120.0, 0.0], [1.0, 2.0]),  # a long first run: base, then doubling
])
def test_backoff(runs: list[float], delays: list[float]) -> None:
    b = Backoff(1.0, 30.0)
    assert [b.next(r) for r in runs] == delays


def test_backoff_cap_below_double_and_other_base() -> None:
    b = Backoff(0.05, 0.08)
    assert [b.next(0.0) for _ in range(3)] == [0.05, 0.08, 0.08]


# --- describe_exit --------------------------------------------------------------------
@pytest.mark.parametrize(("rc", "text"), [
    (0, "exited with status 0"),
    (1, "exited with status 1"),
    (137, "exited with status 137"),
    (-signal.SIGKILL, "killed by SIGKILL"),
    (-signal.SIGTERM, "killed by SIGTERM"),
    (-signal.SIGSEGV, "killed by SIGSEGV"),
    (-200, "killed by signal 200"),  # no such signal
])
def test_describe_exit(rc: int, text: str) -> None:
    assert describe_exit(rc) == text


def test_kick_text_names_the_agent_the_reason_and_the_state_dir() -> None:
    text = kick_text("alice", "restarted after a crash", "/s/agents/alice/state")
    assert text.startswith("[system] alice, your harness was restarted after a crash.")
    assert "(/s/agents/alice/state)" in text


# --- verbs --------------------------------------------------------------------------
@pytest.mark.parametrize(("state", "verb", "kick", "steps"), [
    ("stopped", "start", None, (Start(),)),
    ("stopped", "start", "started", (Start(), Kick("started"))),
    ("crashed", "start", "started", (Start(), Kick("started"))),
    ("running", "start", "started", (Kick("started"),)),  # already up: only the kick
    ("running", "start", None, ()),
    ("running", "stop", None, (Stop(5.0),)),
    ("stopped", "stop", None, (Stop(5.0),)),
    ("running", "restart", None, (Stop(), Start(), Kick("restarted"))),
    ("stopped", "restart", "restarted", (Stop(), Start(), Kick("restarted"))),
    ("running", "rebuild", None, (Stop(), Start(), Kick("rebuilt with its newly applied config"))),
    ("running", "kill", None, (Stop(0.0), Killed("operator"))),
    ("running", "destroy", None, (Stop(5.0), Destroy())),
])
def test_plan(state: State, verb: Verb, kick: str | None, steps: tuple[Step, ...]) -> None:
    assert core(state).plan(verb, kick) == steps


def test_kill_names_who_killed() -> None:
    assert core("running").plan("kill", by="m1nd") == (Stop(0.0), Killed("m1nd"))
    msg = json.loads(killed_message(ContainerKilled("alice", "m1nd", True)))
    assert msg == {"event": "Killed", "agent": "alice", "by": "m1nd", "was_running": True}


def test_transient_shows_in_the_snapshot_while_a_verb_runs() -> None:
    c = core()
    c.begin("restarting")
    assert c.snapshot(None, 0.0, 0.0).transient == "restarting"
    c.end()
    assert c.snapshot(None, 0.0, 0.0).transient is None


def test_start_and_stop_bump_the_generation_and_set_the_state() -> None:
    c = core()
    g1 = c.starting()
    assert c.state == "stopped"  # until the backend has started it
    c.started(5.0)
    assert (c.state, c.started_at) == ("running", 5.0)
    c.stopping()
    assert c.state == "stopped" and c.generation == g1 + 1
    assert c.last_exit is None
    c.stopped(-signal.SIGTERM)
    assert c.last_exit == "killed by SIGTERM"
    assert c.starting() == g1 + 2


# --- exit reports ---------------------------------------------------------------------
def test_an_exit_nobody_asked_for_is_a_crash() -> None:
    c, gen = running(now=100.0)
    crash = c.exited(gen, 1, None, now=103.5)
    assert crash is not None
    assert c.state == "crashed" and c.last_exit == "exited with status 1"
    assert (crash.delay, crash.ran_for) == (1.0, 3.5)
    assert crash.event == ContainerCrash("alice", "exited with status 1", "crash", 1.0)
    assert json.loads(crash.message) == {"event": "ContainerCrash", "agent": "alice", "exit": "exited with status 1",
                                         "reason": "crash", "restart_in_seconds": 1.0}


def test_an_out_of_memory_exit_says_so() -> None:
    c, gen = running()
    crash = c.exited(gen, -signal.SIGKILL, "out of memory", now=101.0)
    assert crash is not None
    assert c.last_exit == "out of memory (killed by SIGKILL)"
    assert crash.event.reason == "out of memory" and crash.event.exit == "killed by SIGKILL"


@pytest.mark.parametrize("case", ["old generation", "stopped on purpose", "already crashed", "never started"])
def test_exits_that_are_ignored(case: str) -> None:
    c, gen = running()
    if case == "old generation":
        c.starting()
        c.started(200.0)  # a restart: the old harness's report comes late
    elif case == "stopped on purpose":
        c.stopping()
    elif case == "already crashed":
        assert c.exited(gen, 1, None, now=101.0) is not None
    else:
        c = core()
        gen = c.generation
    before = (c.state, c.last_exit, c.backoff.current)
    assert c.exited(gen, 1, None, now=300.0) is None
    assert (c.state, c.last_exit, c.backoff.current) == before


def test_crash_delays_follow_the_backoff_and_reset_after_a_stable_run() -> None:
    c = core(base=1.0, cap=4.0)
    delays = []
    for ran_for in (1.0, 1.0, 1.0, 1.0, STABLE_AFTER + 1):
        gen = c.starting()
        c.started(1000.0)
        crash = c.exited(gen, 1, None, now=1000.0 + ran_for)
        assert crash is not None
        delays.append(crash.delay)
    assert delays == [1.0, 2.0, 4.0, 4.0, 1.0]


# --- restart after a crash ----------------------------------------------------------------
def test_restart_after_crash_applies_once_and_counts() -> None:
    c, gen = running()
    assert c.exited(gen, 1, None, now=101.0) is not None
    due = c.generation
    assert c.restart_due(due) and c.restarts == 1
    c.starting()
    c.started(102.0)
    assert not c.restart_due(due)  # running again: the timer's generation is old
    assert c.restarts == 1


@pytest.mark.parametrize("between", ["stopped by a verb", "started by a verb"])
def test_a_verb_after_the_crash_cancels_the_restart(between: str) -> None:
    c, gen = running()
    assert c.exited(gen, 1, None, now=101.0) is not None
    due = c.generation
    if between == "stopped by a verb":
        c.stopping()
    else:
        c.starting()
        c.started(101.5)
    assert not c.restart_due(due) and c.restarts == 0


def test_a_failed_restart_stays_crashed_and_backs_off_further() -> None:
    c, gen = running()
    crash = c.exited(gen, 1, None, now=100.5)
    assert crash is not None and crash.delay == 1.0
    assert c.restart_due(c.generation)
    c.starting()  # the backend's start raises after this
    assert c.restart_failed() == 2.0 and c.state == "crashed"
    assert c.restart_due(c.generation) and c.restarts == 2  # the retry's timer holds the new generation


# --- snapshots ------------------------------------------------------------------------------
def test_snapshot_of_a_running_container_has_its_wall_clock_start() -> None:
    c, _ = running(now=100.0, name="m1nd")
    c.sandboxed = True
    snap = c.snapshot(pid=42, now=130.0, wall=1_000_030.0)
    assert snap.started_at == 1_000_000.0
    assert (snap.name, snap.role, snap.state, snap.pid, snap.driver, snap.sandboxed) == (
        "m1nd", "manager", "running", 42, "builtin", True)


def test_snapshot_of_a_stopped_container_has_no_start() -> None:
    c, gen = running()
    c.exited(gen, 2, None, now=101.0)
    snap = c.snapshot(None, 200.0, 5.0)
    assert (snap.role, snap.state, snap.started_at, snap.last_exit) == (
        "agent", "crashed", None, "exited with status 2")
    assert snap.to_wire()["last_exit"] == "exited with status 2"
