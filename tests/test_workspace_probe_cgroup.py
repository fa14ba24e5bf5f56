"""The workspace status probe inside the agent's limits (issue 14): the git
that looks inside an agent's clone (`workspace_status_probe`) starts through
the harness's launcher, which joins a cgroup first. While the agent runs that
is the agent's own cgroup (what the clone makes git run counts against the
agent's limits); when it does not, a probe cgroup of its own with the agent's
limits, removed after. A filter that forks a hundred processes is stopped at
the agent's pids limit.

Real cgroups (root), real bubblewrap: e2e tier."""

from __future__ import annotations

import os
import secrets
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import passable, wait_for
from workspace_status_repos import Layout, git, make_layout

import hyperhive.workspace_status_probe as probe
from hyperhive.paths import Limits
from hyperhive.sandbox import cgroupfs
from hyperhive.sandbox.cgroups import AgentCgroup, Cgroups
from hyperhive.workspace_status import work_status

AGENT_UID = 1_900_054_321  # the clone's owner: the probe runs as it
LIMITS = Limits(memory_mb=256, pids=32)


def _real_cgroups(namespace: str) -> Cgroups:
    if os.geteuid() != 0:
        pytest.skip("real cgroups need root")
    if shutil.which("bwrap") is None:
        pytest.skip("needs bubblewrap")
    found = Cgroups.detect(namespace)
    if found is None:
        pytest.skip("no writable cgroup memory+pids here")
    return found


def _clear(cg: Cgroups) -> None:
    for own in cg._own.values():
        ns = own / cg.namespace
        for d in (ns.iterdir() if ns.is_dir() else ()):
            if d.is_dir():
                cg.forget(d.name)
    assert cg.discard_namespace(), f"cgroup dirs left in {cg.namespace}"


@pytest.fixture
def bound() -> Iterator[probe.ProbeCgroups]:
    """The agents' cgroups of a test namespace, probes bound by them."""
    cgroups = _real_cgroups(f"hyperhive-test-{secrets.token_hex(4)}")
    pc = probe.ProbeCgroups.of(cgroups, lambda _agent: LIMITS)
    assert pc.spare is not None and pc.spare.namespace == cgroups.namespace + "-probe"
    probe.use_cgroups(pc)
    try:
        yield pc
    finally:
        probe.use_cgroups(None)
        _clear(pc.spare)
        _clear(cgroups)


def hostile_clone(tmp_path: Path, filter_command: str) -> Layout:
    """A clone owned by the agent's uid whose `git status` runs ``filter_command`` (as its clean filter)."""
    lay = make_layout(tmp_path)
    (lay.work / ".gitattributes").write_text("README filter=probe\n")
    git(lay.work, "add", ".gitattributes")
    git(lay.work, "config", "filter.probe.clean", filter_command)
    (lay.work / "README").write_text("HELLO\n")  # the same size: status must hash it, through the filter
    for root, dirs, files in os.walk(lay.work):
        for n in [*dirs, *files]:
            os.lchown(os.path.join(root, n), AGENT_UID, AGENT_UID)
    os.lchown(lay.work, AGENT_UID, AGENT_UID)
    passable(lay.work)
    return lay


def _in_background(fn: Any) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["value"] = fn()
        except Exception as exc:  # noqa: BLE001 - the test reads it
            out["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, out


def _uid_of(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Uid:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _children(cg: Cgroups | None) -> set[str]:
    assert cg is not None
    return {d.name for own in cg._own.values() if (own / cg.namespace).is_dir()
            for d in (own / cg.namespace).iterdir() if d.is_dir()}


def _pids_dir(cg: AgentCgroup) -> Path:
    return cg.dirs["pids" if cg.kind == "v1" else cgroupfs.V2]


@pytest.mark.e2e
def test_a_running_agents_probe_runs_in_its_cgroup_as_its_uid(bound: probe.ProbeCgroups, tmp_path: Path) -> None:
    agent = bound.cgroups.prepare("a", LIMITS)  # the agent runs: its cgroup is there
    lay = hostile_clone(tmp_path, "sh -c 'sleep 3; cat'")
    t, out = _in_background(lambda: work_status(lay.paths, lay.name))
    # The launcher joins as root, then drops to the clone owner's uid and execs bubblewrap.
    wait_for(lambda: [p for p in agent.pids() if _uid_of(p) == AGENT_UID], timeout=10,
             what="the probe in the agent's cgroup, as the agent's uid")
    assert not _children(bound.spare)  # no cgroup of its own: the agent's limits bound it
    t.join(30)
    st = out["value"]
    assert st.dirty is True and not st.unknown, st
    wait_for(lambda: not agent.pids(), timeout=5, what="nothing of the probe left in the agent's cgroup")


@pytest.mark.e2e
def test_a_forking_filter_is_stopped_at_the_agents_pids_limit(bound: probe.ProbeCgroups, tmp_path: Path) -> None:
    agent = bound.cgroups.prepare("a", LIMITS)
    lay = hostile_clone(tmp_path, "sh -c 'i=0; while [ $i -lt 100 ]; do sleep 5 & i=$((i+1)); done; wait; cat'")
    events = _pids_dir(agent) / "pids.events"
    before = cgroupfs.parse_keyed(cgroupfs.read(events)).get("max", 0)
    peak = 0
    t, out = _in_background(lambda: work_status(lay.paths, lay.name))
    end = time.monotonic() + 30
    while t.is_alive() and time.monotonic() < end:
        peak = max(peak, cgroupfs.read_int(_pids_dir(agent) / "pids.current") or 0)
        time.sleep(0.01)
    t.join(30)
    assert not t.is_alive()
    refused = cgroupfs.parse_keyed(cgroupfs.read(events)).get("max", 0) - before
    assert refused > 0, "no fork was refused: the probe was not bounded by the agent's pids limit"
    assert 0 < peak <= LIMITS.pids
    st = out["value"]
    assert st.dirty is True or st.unknown  # never clean
    wait_for(lambda: not agent.pids(), timeout=10, what="nothing of the probe left in the agent's cgroup")


@pytest.mark.e2e
def test_a_stopped_agents_probe_gets_a_cgroup_of_its_own_with_its_limits(bound: probe.ProbeCgroups,
                                                                         tmp_path: Path) -> None:
    assert bound.spare is not None
    lay = hostile_clone(tmp_path, "sh -c 'sleep 3; cat'")
    spare = bound.spare
    t, out = _in_background(lambda: work_status(lay.paths, lay.name))

    def probe_cgroup() -> AgentCgroup | None:
        return next((cg for cg in map(spare.agent, _children(spare)) if cg.pids()), None)

    cg = wait_for(probe_cgroup, timeout=10, what="the probe in a cgroup of its own")
    assert cg.agent.startswith("a-")
    assert cgroupfs.read_int(_pids_dir(cg) / "pids.max") == LIMITS.pids
    memory = cg.dirs["memory" if cg.kind == "v1" else cgroupfs.V2]
    limit = memory / ("memory.limit_in_bytes" if cg.kind == "v1" else "memory.max")
    assert cgroupfs.read_int(limit) == LIMITS.memory_mb << 20
    assert not any(d.exists() for d in bound.cgroups.agent("a").dirs.values())  # the agent's own is not made
    t.join(30)
    assert out["value"].dirty is True and not out["value"].unknown, out
    assert not _children(spare)  # removed after the probe
    assert not any((own / spare.namespace).exists() for own in spare._own.values())  # and its namespace too


def test_without_a_cgroup_to_bound_it_the_probe_gives_no_answer(tmp_path: Path) -> None:
    """Fail closed: cgroups in use but none to be had for this probe → unknown, never clean."""
    if shutil.which("bwrap") is None:
        pytest.skip("without bubblewrap the probe fails before it looks for a cgroup")
    own = {"memory": tmp_path / "memory", "pids": tmp_path / "pids"}
    for d in own.values():
        (d / "ns").mkdir(parents=True)
    cgroups = Cgroups("v1", "ns", own, {"memory": "/", "pids": "/"})
    lay = make_layout(tmp_path / "state-root")
    probe.use_cgroups(probe.ProbeCgroups(cgroups, lambda _a: LIMITS, spare=None))
    try:
        with pytest.raises(probe.ProbeFailed, match="no cgroup"):
            probe.status_count(lay.work)
        st = work_status(lay.paths, lay.name)
    finally:
        probe.use_cgroups(None)
    assert st.unknown and "no cgroup" in (st.reason or "")


@pytest.mark.e2e
def test_a_deadline_ends_the_probe_sooner(tmp_path: Path) -> None:
    """What a listing with a budget needs (`observe_workspaces`): the probe ends by the caller's deadline."""
    if shutil.which("bwrap") is None:
        pytest.skip("needs bubblewrap")
    lay = make_layout(tmp_path)
    git(lay.work, "config", "filter.slow.clean", "sh -c 'sleep 20; cat'")
    (lay.work / ".gitattributes").write_text("* filter=slow\n")
    (lay.work / "README").write_text("HELLO\n")
    t0 = time.monotonic()
    with pytest.raises(probe.ProbeFailed, match="took more than"):
        probe.status_count(lay.work, deadline=t0 + 1.5)
    assert time.monotonic() - t0 < 5
    with pytest.raises(probe.ProbeFailed, match="no time was left"):
        probe.unpulled_log(lay.work, ["HEAD"], [], deadline=time.monotonic() - 1)
