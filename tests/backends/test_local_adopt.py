"""What a harness is adopted by (issue 16): its record, the checks that keep a
reused pid from ever being taken for it, and the local backend handing a real
sandboxed harness from one backend (daemon) to the next."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import passable, pid_alive, wait_for

from hyperhive.backends.local import LocalBackend, probe_sandbox
from hyperhive.backends.local_adopt import (
    RECORD,
    HarnessRecord,
    Proc,
    boot_id,
    identify,
    read_record,
    start_time,
    write_record,
)
from hyperhive.names import AgentName
from hyperhive.paths import AgentConfig, Limits, StatePaths

A = AgentName("a")
ROOT = os.geteuid() == 0


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    try:
        yield p
    finally:
        p.kill()
        p.wait()


def record_of(pid: int, ticks: int, cgroups: tuple[str, ...] = ()) -> HarnessRecord:
    return HarnessRecord(pid, ticks, boot_id(), cgroups, True, "builtin", time.time(), None, None)


def test_a_record_round_trips_and_anything_else_is_none(tmp_path: Path) -> None:
    rec = HarnessRecord(1234, 99, "b-id", ("/sys/fs/cgroup/x/a",), True, "claude", 1.5, 1240, 100, 1_900_000_001)
    path = tmp_path / RECORD
    write_record(path, rec)
    assert read_record(path) == rec and oct(path.stat().st_mode & 0o777) == "0o600"
    assert not list(tmp_path.glob("*.tmp"))
    for bad in ("", "[]", "{}", '{"pid": "1"}', rec.to_json().replace('"pid": 1234', '"pid": 1'),
                rec.to_json().replace('"sandboxed": true', '"sandboxed": 1'),
                rec.to_json().replace('"/sys/fs/cgroup/x/a"', '"relative/a"'),
                rec.to_json().replace('"start_time": 99', '"start_time": true')):
        assert HarnessRecord.from_json(bad) is None, bad
    link = tmp_path / "linked.json"
    link.symlink_to(path)
    assert read_record(link) is None  # never through a link
    assert read_record(tmp_path / "missing.json") is None


def test_start_time_is_field_22_even_with_a_paren_in_the_name(tmp_path: Path) -> None:
    ticks = start_time(os.getpid())
    stat = Path("/proc/self/stat").read_text()
    assert ticks == int(stat.rpartition(")")[2].split()[19])
    # The comm field is the executable's file name (not argv[0]): a link named with parens.
    odd_name = tmp_path / "x) y (z"
    odd_name.symlink_to(shutil.which("sleep") or "/bin/sleep")
    odd = subprocess.Popen([str(odd_name), "30"])
    try:
        assert Path(f"/proc/{odd.pid}/stat").read_text().startswith(f"{odd.pid} (x) y (z) ")
        assert isinstance(start_time(odd.pid), int)
    finally:
        odd.kill()
        odd.wait()
    assert start_time(odd.pid) is None  # reaped: gone


def test_identify_takes_only_the_process_that_was_recorded(sleeper: subprocess.Popen[bytes], tmp_path: Path) -> None:
    ticks = wait_for(lambda: start_time(sleeper.pid))
    found = identify(record_of(sleeper.pid, ticks))
    assert isinstance(found, Proc) and found.pid == sleeper.pid and found.adopted
    assert found.returncode is None and not found.reap(0.05)  # alive, pinned by its pidfd
    assert "another process" in str(identify(record_of(sleeper.pid, ticks + 1)))  # a reused pid
    other_boot = HarnessRecord(sleeper.pid, ticks, "another-boot", (), True, "builtin", 0.0)
    assert "another boot" in str(identify(other_boot))
    cg = tmp_path / "cg"
    cg.mkdir()
    (cg / "cgroup.procs").write_text("1\n2\n")
    assert "not in the agent's cgroup" in str(identify(record_of(sleeper.pid, ticks, (str(cg),))))
    (cg / "cgroup.procs").write_text(f"1\n{sleeper.pid}\n")
    assert isinstance(identify(record_of(sleeper.pid, ticks, (str(cg),))), Proc)
    sleeper.kill()
    sleeper.wait()
    assert "is gone" in str(identify(record_of(sleeper.pid, ticks)))


def test_an_adopted_process_is_watched_through_its_pidfd(sleeper: subprocess.Popen[bytes]) -> None:
    found = identify(record_of(sleeper.pid, wait_for(lambda: start_time(sleeper.pid))))
    assert isinstance(found, Proc)
    sleeper.kill()  # our child here: its parent reaps it, as init would an adopted harness
    sleeper.wait()
    assert found.reap(5.0) and found.wait(0) and found.returncode is None and found.pidfd is None


# --- the backend, for real -----------------------------------------------------------


@pytest.fixture
def paths(tmp_path: Path) -> StatePaths:
    passable(tmp_path)
    p = StatePaths(tmp_path / "state")
    p.create_agent(A, AgentConfig())
    return p


@pytest.fixture
def backends(paths: StatePaths) -> Iterator[list[LocalBackend]]:
    if probe_sandbox(paths, 1_900_065_535 if ROOT else None) is not None:
        pytest.skip("bubblewrap is not usable here")
    made: list[LocalBackend] = []
    yield made
    for b in made:
        if b.cgroups is not None:
            b.cgroups.agent(A).kill_all()  # whatever a failed test left
            b.cgroups.forget(A)


def backend(paths: StatePaths, made: list[LocalBackend]) -> LocalBackend:
    b = LocalBackend(paths, "on", limits=Limits(512, 128))
    made.append(b)
    return b


def joined(b: LocalBackend, pid: int) -> None:
    """The launcher is in the agent's cgroup (its first act; a daemon restart takes far longer)."""
    if b.cgroups is not None:
        cg = b.cgroups.agent(A)
        wait_for(lambda: pid in cg.pids(), what="the launcher in its cgroup")


@pytest.mark.e2e  # real sandboxed harnesses
def test_a_released_harness_is_adopted_by_the_next_backend_and_stopped_by_it(
        paths: StatePaths, backends: list[LocalBackend]) -> None:
    first = backend(paths, backends)
    exits: list[tuple[int | None, str | None]] = []
    h = first.start(A, "builtin", lambda rc, reason: exits.append((rc, reason)))
    rec = read_record(paths.agent(A) / RECORD)
    assert rec is not None and rec.pid == h.pid and rec.relay_pid is not None and rec.sandboxed
    assert rec.cgroups == (tuple(str(d) for d in first.cgroups.agent(A).dirs.values()) if first.cgroups else ())
    joined(first, h.pid)
    first.release(h)
    first.close()  # keeps the namespace: a harness lives in it
    second = backend(paths, backends)
    assert second.adopt(A, "claude", lambda rc, reason: None) is None  # runs otherwise: ended, not adopted
    wait_for(lambda: not pid_alive(h.pid), what="the old harness gone")
    assert not (paths.agent(A) / RECORD).exists()

    h = first.start(A, "builtin", lambda rc, reason: exits.append((rc, reason)))
    joined(first, h.pid)
    first.release(h)
    seen: list[tuple[int | None, str | None]] = []
    adopted = second.adopt(A, "builtin", lambda rc, reason: seen.append((rc, reason)))
    assert adopted is not None and adopted.pid == h.pid and adopted.adopted and adopted.relay is not None
    assert second.stop(adopted, timeout=2) is None  # not our child: its status is unknown
    assert not pid_alive(h.pid) and not (paths.agent(A) / RECORD).exists()
    assert adopted.relay.wait(10)  # its log relay ended with it
    if second.cgroups is not None:
        assert second.cgroups.agent(A).pids() == []
    assert exits == []  # the first backend, released, reported nothing


@pytest.mark.e2e  # a real sandboxed harness
def test_an_adopted_harness_that_dies_is_reported_with_an_unknown_status(
        paths: StatePaths, backends: list[LocalBackend]) -> None:
    first = backend(paths, backends)
    h = first.start(A, "builtin", lambda rc, reason: None)
    joined(first, h.pid)
    first.release(h)
    seen: list[tuple[int | None, str | None]] = []
    adopted = backend(paths, backends).adopt(A, "builtin", lambda rc, reason: seen.append((rc, reason)))
    assert adopted is not None
    # Its output reaches harness.log through its relay (no daemon here: it waits for one).
    log = paths.harness_log(A)
    wait_for(lambda: log.exists() and '"reconnect.retry"' in log.read_text(), timeout=20, what="its log line")
    os.killpg(h.pid, 9)
    wait_for(lambda: seen, timeout=10, what="the adopted harness's exit report")
    assert seen == [(None, None)] and not (paths.agent(A) / RECORD).exists()
    assert adopted.relay is not None and adopted.relay.wait(10)
