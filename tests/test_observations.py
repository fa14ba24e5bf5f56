"""Issue 17: the state dir's shared cache of badges, cgroup usage and clone
status (`hyperhive.observations`), as the admin ``ls`` (`observe_ls`) and the
dashboard (`StateSource`) use it, on real agent dirs; the cache's clock is the
test's."""

from __future__ import annotations

import concurrent.futures as cf
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from hyperhive.badges import NEEDS_LOGIN, NEEDS_UPDATE, UNSANDBOXED
from hyperhive.harness.claude_cmdline import CREDENTIAL_ENV
from hyperhive.names import AgentName
from hyperhive.observations import (
    MAX_AGE_SECONDS,
    Observations,
    Table,
    forget_observations,
    install_observations,
    observations_for,
)
from hyperhive.paths import AgentConfig, StatePaths
from hyperhive.web.dashboard.app import BADGE_REFRESH_SECONDS
from hyperhive.web.dashboard.state import StateSource
from hyperhive.web.operator.agents import observe_ls


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def _no_key_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for k in CREDENTIAL_ENV:
        monkeypatch.delenv(k, raising=False)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def paths(tmp_path: Path, clock: Clock) -> Iterator[StatePaths]:
    p = StatePaths(tmp_path / "state")
    for name in ("alice", "bob"):
        p.create_agent(AgentName(name), AgentConfig())
        config_edit(p, name, 1000.0, applied=1000.0)
    install_observations(p, Observations(clock))
    yield p
    forget_observations(p)


def config_edit(paths: StatePaths, name: str, at: float, applied: float | None = None) -> None:
    """The operator edits the agent's config (a file newer than the applied ones)."""
    agent = AgentName(name)
    if applied is not None:
        os.utime(paths.applied(agent) / "agent.json", (applied, applied))
    os.utime(paths.config_dir(agent) / "agent.json", (at, at))


def snap(name: str, state: str = "stopped", **kw: Any) -> dict[str, Any]:
    return {"name": name, "role": "agent", "state": state, "transient": None, "driver": "builtin",
            "sandboxed": True, "pid": 40 if state == "running" else None, "restarts": 0, "last_exit": None,
            "started_at": None, **kw}


def badges(paths: StatePaths, snaps: list[dict[str, Any]], backend: Any = None) -> dict[str, list[str]]:
    return {r["name"]: r["badges"] for r in observe_ls(snaps, paths, backend)}


# --- the table ------------------------------------------------------------------------------
def test_table_takes_an_entry_only_fresh_and_for_the_same_inputs(clock: Clock) -> None:
    t: Table[str] = Table(clock, max_age=20.0)
    t.put({"a": (("builtin", True), "A"), "b": (1, "B")}, at=clock())
    assert t.known([("a", ("builtin", True)), ("b", 1), ("c", None)]) == {"a": "A", "b": "B"}
    assert t.known([("a", ("claude", True)), ("b", 2)]) == {}  # other inputs: not this entry
    clock.now += 20.0
    assert t.known([("b", 1)]) == {"b": "B"}  # at the bound: still taken
    clock.now += 0.5
    assert t.known([("b", 1)]) == {} and t.known([("b", 1)], any_age=True) == {"b": "B"}


def test_table_keeps_the_newer_entry_replace_and_drop(clock: Clock) -> None:
    t: Table[str] = Table(clock)
    t.put({"a": (None, "new")}, at=50.0)
    t.put({"a": (None, "old")}, at=40.0)  # computed before the one there: it stays
    assert t.values() == {"a": "new"}
    t.replace({"b": (None, "B")}, at=60.0)
    assert t.values() == {"b": "B"}
    t.drop(["b", "nobody"])
    assert t.values() == {}


def test_each_state_dir_has_its_own(tmp_path: Path) -> None:
    a, b = StatePaths(tmp_path / "a"), StatePaths(tmp_path / "b")
    try:
        assert observations_for(a) is observations_for(StatePaths(tmp_path / "a"))
        assert observations_for(a) is not observations_for(b)
    finally:
        forget_observations(a)
        forget_observations(b)


def test_the_bound_is_twice_the_dashboards_round() -> None:
    assert MAX_AGE_SECONDS == 2 * BADGE_REFRESH_SECONDS


# --- hive ls ----------------------------------------------------------------------------------
def test_ls_takes_cached_badges_and_sees_a_config_edit_once_stale(paths: StatePaths, clock: Clock) -> None:
    snaps = [snap("alice"), snap("bob")]
    assert badges(paths, snaps) == {"alice": [], "bob": []}
    config_edit(paths, "alice", 2000.0)
    assert badges(paths, snaps)["alice"] == []  # cached: no stat on this call
    clock.now += MAX_AGE_SECONDS - 1
    assert badges(paths, snaps)["alice"] == []
    clock.now += 2  # past the bound with no round in between: ls computes it itself
    assert badges(paths, snaps) == {"alice": [NEEDS_UPDATE], "bob": []}


def test_a_new_agent_and_changed_inputs_are_computed_at_once(paths: StatePaths, clock: Clock) -> None:
    assert badges(paths, [snap("alice"), snap("bob")]) == {"alice": [], "bob": []}
    paths.create_agent(AgentName("carol"), AgentConfig())  # just spawned
    got = badges(paths, [snap("alice"), snap("bob", sandboxed=False), snap("carol", driver="claude")])
    assert got == {"alice": [], "bob": [UNSANDBOXED], "carol": [NEEDS_LOGIN]}


def test_an_agent_mid_verb_is_observed_afresh_and_not_cached(paths: StatePaths) -> None:
    spawning = snap("alice", transient="spawning")
    assert badges(paths, [spawning]) == {"alice": []}
    config_edit(paths, "alice", 2000.0)
    assert badges(paths, [spawning]) == {"alice": [NEEDS_UPDATE]}
    assert "alice" not in observations_for(paths).badges.values()
    assert badges(paths, [snap("alice")]) == {"alice": [NEEDS_UPDATE]}  # settled: computed, then cached
    assert "alice" in observations_for(paths).badges.values()


def test_a_login_key_in_the_environment_recomputes(paths: StatePaths, monkeypatch: pytest.MonkeyPatch) -> None:
    assert badges(paths, [snap("alice", driver="claude")]) == {"alice": [NEEDS_LOGIN]}
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test")
    assert badges(paths, [snap("alice", driver="claude")]) == {"alice": []}


class FakeUsage:
    def __init__(self, figures: Mapping[str, Any]) -> None:
        self.figures = dict(figures)
        self.calls: list[str] = []

    def __call__(self, name: AgentName) -> Any:
        self.calls.append(name)
        return self.figures.get(name)


class Backend:
    def __init__(self, usage: FakeUsage) -> None:
        self.usage = usage


def fig(mem: int) -> dict[str, int | None]:
    return {"memory_bytes": mem, "memory_peak_bytes": mem, "pids": 1}


def test_ls_usage_is_cached_per_run(paths: StatePaths, clock: Clock) -> None:
    usage = FakeUsage({"alice": fig(1)})
    backend = Backend(usage)

    def mem(**kw: Any) -> Any:
        (row,) = observe_ls([snap("alice", **kw)], paths, backend)
        return row["usage"] and row["usage"]["memory_bytes"]

    assert mem(state="running") == 1 and usage.calls == ["alice"]
    usage.figures["alice"] = fig(2)
    assert mem(state="running") == 1 and usage.calls == ["alice"]  # the same run: from the cache
    assert mem(state="running", pid=41) == 2 and len(usage.calls) == 2  # restarted: read afresh
    assert mem() is None and len(usage.calls) == 2  # stopped: no figures, nothing read
    clock.now += MAX_AGE_SECONDS + 1
    usage.figures["alice"] = fig(3)
    assert mem(state="running", pid=41) == 3


def test_ls_computes_workspaces_only_for_names_not_cached(paths: StatePaths, clock: Clock,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[list[str]] = []
    import hyperhive.web.operator.agents as agents

    def observe(p: StatePaths, names: list[AgentName]) -> dict[str, Any]:
        asked.append(sorted(names))
        return {n: None for n in names}

    monkeypatch.setattr(agents, "observe_workspaces", observe)
    observe_ls([snap("alice"), snap("bob")], paths)
    observe_ls([snap("alice"), snap("bob")], paths)
    clock.now += MAX_AGE_SECONDS + 1
    observations_for(paths).workspaces.put({"bob": (None, None)}, at=clock())
    observe_ls([snap("alice"), snap("bob")], paths)
    assert asked == [["alice", "bob"], ["alice"]]


# --- one cache for the dashboard and ls -------------------------------------------------------------
class Answer:
    """A pykka proxy method as ``bridge.call`` uses it: ``defer(..., reply=future)``."""

    def __init__(self, value: Callable[[], Any]) -> None:
        self.value = value

    def defer(self, *args: Any, reply: cf.Future[Any], **kwargs: Any) -> None:
        reply.set_running_or_notify_cancel()
        reply.set_result(self.value())


class Actor:
    def __init__(self, **methods: Callable[[], Any]) -> None:
        for name, fn in methods.items():
            setattr(self, name, Answer(fn))


async def test_the_dashboards_round_renews_what_ls_shows(paths: StatePaths, clock: Clock) -> None:
    snaps = [snap("alice"), snap("bob")]
    source = StateSource(paths, Actor(ls=lambda: snaps), Actor(stats=lambda: {"parked": {}, "undelivered": {}}),
                         None, None)
    rows = {r["name"]: r for r in (await source.sections(["containers"]))["containers"]}
    assert rows["alice"]["badges"] == []
    config_edit(paths, "alice", 2000.0)
    assert badges(paths, snaps)["alice"] == []  # ls takes the dashboard's figures
    clock.now += BADGE_REFRESH_SECONDS
    await source.refresh_badges()  # the round: the file's badge shows within it
    assert badges(paths, snaps)["alice"] == [NEEDS_UPDATE]
    rows = {r["name"]: r for r in (await source.sections(["containers"]))["containers"]}
    assert rows["alice"]["badges"] == [NEEDS_UPDATE]
    # A gone agent leaves the cache on the next round; one removed leaves it at once.
    snaps.pop()
    source.resync()
    await source.refresh_badges()
    assert set(source.badges) == {"alice"}
    source.note_container("container.removed", {"name": "alice"})
    assert source.badges == {}
