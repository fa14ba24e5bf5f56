"""The Coordinator's registry rules, with no actor or database: preconditions
of spawn, destroy and routed verbs, desired states, the boot plan, revival,
and the snapshot mirror with its urn check."""

from __future__ import annotations

import pytest

from hyperhive.actors.coordinator_core import (
    DESIRED,
    BootStep,
    Registry,
    boot_plan,
    config_is_fresh,
    needs_manager,
)
from hyperhive.actors.snapshots import ContainerSnapshot, State
from hyperhive.errors import BadName, Conflict, UnknownAgent
from hyperhive.names import AgentName


def snap(name: str, state: State = "running") -> ContainerSnapshot:
    return ContainerSnapshot(name=name, role="manager" if name == "m1nd" else "agent", state=state)


def registry(*names: str) -> Registry[str]:
    r: Registry[str] = Registry()
    for n in names:
        r.add(AgentName(n), f"actor-{n}", f"urn:{n}", snap(n, "stopped"))
    return r


# --- preconditions ------------------------------------------------------------------
@pytest.mark.parametrize(("check", "name", "error"), [
    ("spawn", "bob", None),
    ("spawn", "alice", Conflict),  # exists
    ("spawn", "m1nd", Conflict),  # the manager exists from the first boot on
    ("spawn", "system", BadName),  # reserved
    ("spawn", "Bad Name", BadName),
    ("known", "alice", None),
    ("known", "m1nd", None),
    ("known", "bob", UnknownAgent),
    ("known", "../x", BadName),
    ("destroy", "alice", None),
    ("destroy", "m1nd", Conflict),  # stop or restart it instead
    ("destroy", "bob", UnknownAgent),
    ("destroy", "", BadName),
])
def test_preconditions(check: str, name: str, error: type[Exception] | None) -> None:
    r = registry("m1nd", "alice")
    fn = {"spawn": r.check_spawn, "known": r.check_known, "destroy": r.check_destroy}[check]
    if error is None:
        assert fn(name) == name
    else:
        with pytest.raises(error):
            fn(name)


@pytest.mark.parametrize(("verb", "desired"), [
    ("start_agent", "running"), ("restart_agent", "running"), ("rebuild_agent", "running"),
    ("stop_agent", "stopped"), ("kill_agent", "stopped"),
])
def test_desired_state_each_verb_leaves(verb: str, desired: str) -> None:
    assert DESIRED[verb] == desired  # type: ignore[index]


@pytest.mark.parametrize(("applied_exists", "fresh"), [(False, True), (True, False)])
def test_a_revived_agent_keeps_its_applied_config(applied_exists: bool, fresh: bool) -> None:
    assert config_is_fresh(applied_exists) is fresh


# --- boot -----------------------------------------------------------------------------
@pytest.mark.parametrize(("names", "needed"), [([], True), (["alice"], True), (["alice", "m1nd"], False)])
def test_the_manager_is_created_when_missing(names: list[str], needed: bool) -> None:
    assert needs_manager(names) is needed


def test_boot_registers_the_unknown_and_starts_only_the_running() -> None:
    rows = [("m1nd", "running"), ("alice", "stopped"), ("bob", "running"), ("carol", "running")]
    assert boot_plan(rows, known=["m1nd"]) == [
        BootStep(AgentName("m1nd"), attach=False, start=True),  # created just now (first start)
        BootStep(AgentName("alice"), attach=True, start=False),  # stopped stays stopped
        BootStep(AgentName("bob"), attach=True, start=True),
        BootStep(AgentName("carol"), attach=True, start=True),
    ]


def test_boot_with_nothing_kept_and_a_bad_name() -> None:
    assert boot_plan([], known=[]) == []
    with pytest.raises(BadName):
        boot_plan([("alice", "running"), ("Not Valid", "running")], known=[])


# --- the registry and its mirror -------------------------------------------------------------
def test_registry_keeps_order_and_removes() -> None:
    r = registry("m1nd", "alice", "bob")
    assert r.names() == ["m1nd", "alice", "bob"] and "alice" in r and "zed" not in r
    assert r.get(AgentName("bob")) == "actor-bob" and r.get(AgentName("zed")) is None
    assert r.remove(AgentName("alice")) == "actor-alice"
    assert [s.name for s in r.snapshots()] == ["m1nd", "bob"]
    with pytest.raises(UnknownAgent):
        r.check_known("alice")


@pytest.mark.parametrize(("name", "urn", "kept"), [
    ("alice", "urn:alice", True),  # its own actor
    ("alice", None, True),  # no urn given: the name decides
    ("alice", "urn:old-alice", False),  # a destroyed alice's last words, after a new alice took the name
    ("zed", "urn:zed", False),  # not registered (destroyed)
])
def test_container_changed_keeps_only_the_registered_actors_report(name: str, urn: str | None, kept: bool) -> None:
    r = registry("m1nd", "alice")
    assert r.changed(snap(name, "crashed"), urn) is kept
    states = {s.name: s.state for s in r.snapshots()}
    assert states == {"m1nd": "stopped", "alice": "crashed" if kept else "stopped"}


def test_ls_leaves_out_a_container_with_no_snapshot_yet() -> None:
    r: Registry[str] = Registry()
    r.add(AgentName("alice"), "a", "urn:a")
    assert r.snapshots() == []
    assert r.changed(snap("alice"), "urn:a")
    assert r.snapshots() == [snap("alice")]
