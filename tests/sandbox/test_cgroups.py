"""Per-agent cgroups: real v1 cgroups on this machine (as root), v2 on a fake tree.

The real tests create ``<own>/hyperhive-test-<random>/<agent>`` under this
process's own memory and pids cgroups and remove them in fixture finalizers,
even when a test fails. Children run under a tiny subreaper (``REAPER``) that
reaps every orphan of the agent tree at once: pid 1 here reaps orphans only
every second or two, and an unreaped zombie still counts in ``pids.current``.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hyperhive.sandbox import cgroupfs, oom_watch
from hyperhive.sandbox.cgroups import AgentCgroup, Cgroups, Limits
from hyperhive.sandbox.launch import launch_argv

NOBODY = 65534
MB = 1024 * 1024
CHILD_ENV = {"PATH": "/usr/bin:/bin", "LC_ALL": "C"}

# Forks the command, reaps every descendant that gets orphaned (it is their subreaper), and exits
# like the command did (re-raising its signal), once the last descendant is gone.
REAPER = """
import ctypes, os, signal, sys
ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
child = os.fork()
if child == 0:
    try:
        os.execvp(sys.argv[1], sys.argv[1:])
    finally:
        os._exit(127)
status = 0
while True:
    try:
        pid, st = os.waitpid(-1, 0)
    except ChildProcessError:
        break
    if pid == child:
        status = st
code = os.waitstatus_to_exitcode(status)
if code < 0:
    if -code != signal.SIGKILL:
        signal.signal(-code, signal.SIG_DFL)
    os.kill(os.getpid(), -code)
sys.exit(code)
"""


def wait_for(check: Callable[[], object], timeout: float = 10.0, what: str = "condition") -> object:
    """Poll ``check`` until it is truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def read(path: Path) -> str:
    return path.read_text().strip()


# ---------------------------------------------------------------- real v1 fixtures


def _real_v1_or_skip(namespace: str) -> Cgroups:
    if os.geteuid() != 0:
        pytest.skip("real cgroups need root")
    found = Cgroups.detect(namespace)
    if found is None:
        pytest.skip("no writable cgroup memory+pids here")
    if found.kind != "v1":
        found.discard_namespace()
        pytest.skip(f"this host uses cgroup {found.kind}; these tests exercise v1")
    return found


@pytest.fixture
def real() -> Iterator[Cgroups]:
    """A v1 namespace of our own; every agent cgroup in it and the namespace are removed afterwards."""
    cg = _real_v1_or_skip(f"hyperhive-test-{secrets.token_hex(4)}")
    try:
        yield cg
    finally:
        dirs = [own / cg.namespace for own in cg._own.values()]
        for name in {p.name for d in dirs if d.is_dir() for p in d.iterdir() if p.is_dir()}:
            cg.forget(name)
        assert cg.discard_namespace(), f"cgroup dirs left: {dirs}"
        assert not any(d.exists() for d in dirs)


class Runner:
    """Starts commands through the launcher into an agent cgroup; ends them all afterwards."""

    def __init__(self) -> None:
        self.started: list[tuple[AgentCgroup, subprocess.Popen[str]]] = []

    def start(self, cg: AgentCgroup, argv: list[str], uid: int | None = NOBODY, **kw: object) -> subprocess.Popen[str]:
        cmd = [sys.executable, "-c", REAPER, *launch_argv(sys.executable, cg.procs_files, uid, uid, argv)]
        options: dict[str, object] = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, **kw}
        proc = subprocess.Popen(cmd, text=True, cwd="/", env=CHILD_ENV, **options)  # type: ignore[call-overload]
        self.started.append((cg, proc))
        return proc

    def close(self) -> None:
        for cg, proc in self.started:
            cg.kill_all()
            try:
                proc.communicate(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()  # the reaper, our own child
                proc.communicate()


@pytest.fixture
def runner() -> Iterator[Runner]:
    # Commands run as nobody need an interpreter nobody can run (the venv's lives under /root).
    if not Path("/usr/bin/python3").exists():
        pytest.skip("no /usr/bin/python3 for the unprivileged children")
    r = Runner()
    try:
        yield r
    finally:
        r.close()


def in_cgroup(pid: int, cg: AgentCgroup) -> dict[str, str]:
    """controller → path from /proc/<pid>/cgroup, for the controllers the agent cgroup uses."""
    out = {}
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, ctrl, path = line.split(":", 2)
        for key in cg.dirs:
            if key in ctrl.split(","):
                out[key] = path
    return out


def status_field(pid: int, name: str) -> list[str]:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{name}:"):
            return line.split()[1:]
    raise AssertionError(f"no {name} in /proc/{pid}/status")


# ---------------------------------------------------------------- detect and names


def self_paths() -> dict[str, str]:
    """controller → this process's own cgroup path, from /proc/self/cgroup."""
    out = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, ctrl, path = line.split(":", 2)
        for name in ctrl.split(","):
            out[name] = path
    return out


def test_detect_is_v1_here() -> None:
    cg = _real_v1_or_skip(f"hyperhive-test-{secrets.token_hex(4)}")
    try:
        assert cg.kind == "v1"
        own = {key: Path("/sys/fs/cgroup", key, path.lstrip("/")) for key, path in self_paths().items()}
        assert cg._own == {"memory": own["memory"], "pids": own["pids"]}
        for path in cg._own.values():
            assert (path / cg.namespace).is_dir()
        assert cg.agent("alpha").procs_files == (
            own["memory"] / cg.namespace / "alpha" / "cgroup.procs",
            own["pids"] / cg.namespace / "alpha" / "cgroup.procs",
        )
    finally:
        assert cg.discard_namespace()


def test_detect_none_when_nothing_is_usable(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    root.mkdir()
    self_cgroup = tmp_path / "self"
    self_cgroup.write_text("4:memory:/x\n8:pids:/\n0::/\n")
    assert Cgroups.detect("hyperhive-x", root=root, self_cgroup=self_cgroup) is None
    assert Cgroups.detect("hyperhive-x", root=root, self_cgroup=tmp_path / "missing") is None
    assert list(root.iterdir()) == []


def test_detect_v1_on_a_fake_tree_with_joined_mounts(tmp_path: Path) -> None:
    """A fake v1 layout: memory mounted alone, pids joined with another controller's mount name."""
    root = tmp_path / "cgroup"
    (root / "memory" / "svc").mkdir(parents=True)
    (root / "memory" / "svc" / "cgroup.procs").write_text("")
    (root / "pids,devices").mkdir()
    (root / "pids,devices" / "cgroup.procs").write_text("")
    self_cgroup = tmp_path / "self"
    self_cgroup.write_text("4:memory:/svc\n8:pids,devices:/\n0::/\n")
    found = Cgroups.detect("hyperhive-x", root=root, self_cgroup=self_cgroup)
    assert found is not None and found.kind == "v1"
    assert (root / "memory" / "svc" / "hyperhive-x").is_dir()
    assert (root / "pids,devices" / "hyperhive-x").is_dir()
    assert found.agent("a").procs_files == (
        root / "memory" / "svc" / "hyperhive-x" / "a" / "cgroup.procs",
        root / "pids,devices" / "hyperhive-x" / "a" / "cgroup.procs",
    )


@pytest.mark.parametrize("bad", ["..", ".", "", "a/b", "/a", "a\0b", "memory.max", ".hidden", "a b", "x" * 200])
def test_unsafe_names_are_refused(tmp_path: Path, bad: str) -> None:
    cg = Cgroups("v2", "ns", {"": tmp_path}, {"": "/"})
    with pytest.raises(ValueError):
        cg.prepare(bad, Limits(64, 20))
    with pytest.raises(ValueError):
        cg.agent(bad)
    with pytest.raises(ValueError):
        cg.forget(bad)
    with pytest.raises(ValueError):
        Cgroups.detect(bad, root=tmp_path, self_cgroup=tmp_path / "none")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- v2 on a fake tree


def fake_v2(tmp_path: Path, own_rel: str = "/system.slice/hive.service", procs: str = "1234\n5678\n") -> Path:
    """A fake cgroup2 tree (plain files and dirs) with the daemon's own cgroup at ``own_rel``.

    This machine has no usable cgroup v2 (its /sys/fs/cgroup/unified offers no controllers), so
    there is no kernel behind these files: the v2 tests check only which files are written with
    what, and the move of the daemon into a leaf.
    """
    root = tmp_path / "cgroup"
    root.mkdir()
    (root / "cgroup.controllers").write_text("cpuset cpu io memory hugetlb pids rdma misc\n")
    (root / "cgroup.subtree_control").write_text("cpu io memory pids\n")
    (root / "cgroup.procs").write_text("1\n")
    own = root / own_rel.strip("/") if own_rel.strip("/") else root
    own.mkdir(parents=True, exist_ok=True)
    (own / "cgroup.controllers").write_text("cpu io memory pids\n")
    if own != root:
        (own / "cgroup.subtree_control").write_text("")
        (own / "cgroup.type").write_text("domain\n")
        (own / "cgroup.procs").write_text(procs)
    (tmp_path / "self").write_text(f"0::{own_rel}\n")
    return own


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Every cgroup file write, in order, as (path, value); the writes still happen."""
    seen: list[tuple[str, str]] = []
    real_write = cgroupfs.write

    def recording(path: Path, value: str) -> None:
        seen.append((str(path), value))
        real_write(path, value)

    monkeypatch.setattr(cgroupfs, "write", recording)
    return seen


def test_v2_prepare_moves_the_daemon_into_a_leaf_then_enables_controllers(
    tmp_path: Path, writes: list[tuple[str, str]]
) -> None:
    own = fake_v2(tmp_path)
    cg = Cgroups.detect("hyperhive-ns", root=tmp_path / "cgroup", self_cgroup=tmp_path / "self")
    assert cg is not None and cg.kind == "v2"
    agent = cg.prepare("alpha", Limits(memory_mb=64, pids=20))
    ns = own / "hyperhive-ns"
    a = ns / "alpha"
    assert writes == [
        (str(own / "daemon" / "cgroup.procs"), "1234"),
        (str(own / "daemon" / "cgroup.procs"), "5678"),
        (str(own / "cgroup.subtree_control"), "+memory +pids"),
        (str(ns / "cgroup.subtree_control"), "+memory +pids"),
        (str(a / "memory.max"), str(64 * MB)),
        (str(a / "memory.oom.group"), "1"),
        (str(a / "pids.max"), "20"),
    ]
    assert agent.procs_files == (a / "cgroup.procs",)
    assert not (a / "memory.swap.max").exists()  # not offered (no swap accounting): not created


def test_v2_a_daemon_started_from_the_leaf_finds_the_agents_above_it(tmp_path: Path) -> None:
    """issue 16: an earlier daemon moved its cgroup's processes (the shell too) into
    <own>/daemon and left agents running in <own>/<ns>; the next one, started from
    that shell, owns <own> again: the agents' cgroups are where they were."""
    leaf = fake_v2(tmp_path, own_rel="/system.slice/hive.service/daemon")
    (leaf.parent / "hyperhive-ns" / "alpha").mkdir(parents=True)
    cg = Cgroups.detect("hyperhive-ns", root=tmp_path / "cgroup", self_cgroup=tmp_path / "self")
    assert cg is not None and cg.agent("alpha").dirs[""] == leaf.parent / "hyperhive-ns" / "alpha"
    assert cg.agent("alpha")._rels[""] == "/system.slice/hive.service/hyperhive-ns/alpha"
    other = tmp_path / "other"
    other.mkdir()
    leaf = fake_v2(other, own_rel="/system.slice/x.service/daemon")  # no namespace above: its own cgroup
    cg = Cgroups.detect("hyperhive-ns", root=other / "cgroup", self_cgroup=other / "self")
    assert cg is not None and cg.agent("alpha").dirs[""] == leaf / "hyperhive-ns" / "alpha"


def test_v2_reuse_empties_and_rewrites_without_moving_again(tmp_path: Path, writes: list[tuple[str, str]]) -> None:
    """Second prepare: controllers already enabled (as the kernel shows them, no "+"), swap.max present."""
    own = fake_v2(tmp_path)
    cg = Cgroups.detect("hyperhive-ns", root=tmp_path / "cgroup", self_cgroup=tmp_path / "self")
    assert cg is not None
    cg.prepare("alpha", Limits(64, 20))
    ns = own / "hyperhive-ns"
    a = ns / "alpha"
    (own / "cgroup.subtree_control").write_text("memory pids\n")
    (ns / "cgroup.subtree_control").write_text("memory pids\n")
    (a / "memory.swap.max").write_text("max\n")
    (a / "cgroup.kill").write_text("")
    (a / "cgroup.procs").write_text("")
    writes.clear()
    again = cg.prepare("alpha", Limits(128, 40))
    assert writes == [
        (str(a / "cgroup.kill"), "1"),
        (str(a / "memory.max"), str(128 * MB)),
        (str(a / "memory.swap.max"), "0"),
        (str(a / "memory.oom.group"), "1"),
        (str(a / "pids.max"), "40"),
    ]
    assert again.procs_files == (a / "cgroup.procs",)


def test_v2_root_cgroup_keeps_its_processes(tmp_path: Path, writes: list[tuple[str, str]]) -> None:
    """The root cgroup is exempt from "no internal processes": nothing is moved."""
    own = fake_v2(tmp_path, own_rel="/")
    cg = Cgroups.detect("hyperhive-ns", root=tmp_path / "cgroup", self_cgroup=tmp_path / "self")
    assert cg is not None and cg.kind == "v2"
    (own / "cgroup.subtree_control").write_text("cpu\n")
    cg.prepare("alpha", Limits(64, 20))
    assert not (own / "daemon").exists()
    assert writes[0] == (str(own / "cgroup.subtree_control"), "+memory +pids")


def test_v2_without_pids_falls_back_and_finds_nothing(tmp_path: Path) -> None:
    own = fake_v2(tmp_path)
    (own / "cgroup.controllers").write_text("cpu io memory\n")
    assert Cgroups.detect("hyperhive-ns", root=tmp_path / "cgroup", self_cgroup=tmp_path / "self") is None
    assert not (own / "hyperhive-ns").exists()


def test_v2_usage_and_oom_kills_tolerate_removal(tmp_path: Path) -> None:
    own = fake_v2(tmp_path)
    cg = Cgroups.detect("hyperhive-ns", root=tmp_path / "cgroup", self_cgroup=tmp_path / "self")
    assert cg is not None
    agent = cg.prepare("alpha", Limits(64, 20))
    a = own / "hyperhive-ns" / "alpha"
    (a / "memory.current").write_text("1000\n")
    (a / "memory.peak").write_text("2000\n")
    (a / "pids.current").write_text("3\n")
    (a / "cgroup.procs").write_text("")
    (a / "memory.events").write_text("low 0\nhigh 0\nmax 5\noom 2\noom_kill 1\noom_group_kill 1\n")
    assert agent.usage() == {"memory_bytes": 1000, "memory_peak_bytes": 2000, "pids": 3}
    assert agent.oom_kills() == 2
    (a / "memory.peak").unlink()  # kernels before 5.19
    assert agent.usage()["memory_peak_bytes"] is None
    shutil.rmtree(a)
    assert agent.usage() == {"memory_bytes": None, "memory_peak_bytes": None, "pids": None}
    assert agent.oom_kills() == 0
    assert agent.pids() == []
    assert agent.kill_all(timeout=0.1)


def test_v2_watch_reports_a_new_oom_kill(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On the fake tree no poll(2) notification comes: the periodic re-read finds the change."""
    monkeypatch.setattr(oom_watch, "V2_RECHECK_SECONDS", 0.02)
    own = fake_v2(tmp_path)
    cg = Cgroups.detect("hyperhive-ns", root=tmp_path / "cgroup", self_cgroup=tmp_path / "self")
    assert cg is not None
    agent = cg.prepare("alpha", Limits(64, 20))
    events = own / "hyperhive-ns" / "alpha" / "memory.events"
    events.write_text("oom 0\noom_kill 0\noom_group_kill 0\n")
    fired = threading.Event()
    watch = agent.watch_oom(fired.set)
    try:
        assert not fired.is_set()
        events.write_text("oom 1\noom_kill 1\noom_group_kill 1\n")
        assert fired.wait(5), "the watch did not report the OOM kill"
    finally:
        started = time.monotonic()
        watch.close()
        watch.close()
        assert time.monotonic() - started < 1.0


# ---------------------------------------------------------------- v1 limits (fake kernel rules)


def fake_v1_memory(tmp_path: Path, memsw: bool) -> tuple[Path, Path]:
    memory = tmp_path / "memory"
    pids = tmp_path / "pids"
    memory.mkdir()
    pids.mkdir()
    unlimited = "9223372036854771712\n"
    (memory / "memory.limit_in_bytes").write_text(unlimited)
    (memory / "memory.max_usage_in_bytes").write_text("123456\n")
    if memsw:
        (memory / "memory.memsw.limit_in_bytes").write_text(unlimited)
        (memory / "memory.memsw.max_usage_in_bytes").write_text("123456\n")
    return memory, pids


@pytest.fixture
def kernel_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    """The v1 rule the kernel enforces (seen here: EINVAL): memsw.limit >= limit at every step."""
    real_write = cgroupfs.write

    def checked(path: Path, value: str) -> None:
        limit = path.parent / "memory.limit_in_bytes"
        memsw = path.parent / "memory.memsw.limit_in_bytes"
        if memsw.exists() and path.name in (limit.name, memsw.name):
            after_limit = int(value) if path == limit else int(read(limit))
            after_memsw = int(value) if path == memsw else int(read(memsw))
            if after_memsw < after_limit:
                raise OSError(22, "Invalid argument")
        real_write(path, value)

    monkeypatch.setattr(cgroupfs, "write", checked)


@pytest.mark.parametrize("memsw", [True, False])
@pytest.mark.usefixtures("kernel_rule")
def test_v1_limits_raise_and_lower(tmp_path: Path, memsw: bool) -> None:
    memory, pids = fake_v1_memory(tmp_path, memsw)
    for mb in (64, 128, 32, 32, 4096):
        cgroupfs.write_v1_limits(memory, pids, Limits(memory_mb=mb, pids=20))
        assert read(memory / "memory.limit_in_bytes") == str(mb * MB)
        if memsw:
            assert read(memory / "memory.memsw.limit_in_bytes") == str(mb * MB)
            assert read(memory / "memory.memsw.max_usage_in_bytes") == "0"
        else:
            assert not (memory / "memory.memsw.limit_in_bytes").exists()
        assert read(memory / "memory.max_usage_in_bytes") == "0"
        assert read(pids / "pids.max") == "20"


# ---------------------------------------------------------------- real v1


def test_v1_prepare_is_idempotent_and_changes_limits(real: Cgroups) -> None:
    first = real.prepare("alpha", Limits(memory_mb=64, pids=20))
    mem, pids = first.dirs["memory"], first.dirs["pids"]
    assert first.procs_files == (mem / "cgroup.procs", pids / "cgroup.procs")
    assert read(mem / "memory.limit_in_bytes") == str(64 * MB)
    assert read(pids / "pids.max") == "20"
    memsw = mem / "memory.memsw.limit_in_bytes"
    for mb in (64, 256, 32):
        again = real.prepare("alpha", Limits(memory_mb=mb, pids=mb))
        assert again.procs_files == first.procs_files
        assert read(mem / "memory.limit_in_bytes") == str(mb * MB)
        if memsw.exists():
            assert read(memsw) == str(mb * MB)
        assert read(pids / "pids.max") == str(mb)
    real.forget("alpha")
    assert not mem.exists() and not pids.exists()
    real.forget("alpha")  # nothing left: a no-op


def test_v1_launcher_joins_both_cgroups_as_nobody(real: Cgroups, runner: Runner) -> None:
    cg = real.prepare("alpha", Limits(memory_mb=64, pids=20))
    proc = runner.start(cg, ["sh", "-c", "echo $$; exec sleep 30"])
    assert proc.stdout is not None
    pid = int(proc.stdout.readline())
    own = self_paths()
    assert in_cgroup(pid, cg) == {key: f"{own[key].rstrip('/')}/{real.namespace}/alpha" for key in ("memory", "pids")}
    assert status_field(pid, "Uid") == [str(NOBODY)] * 4
    assert status_field(pid, "Gid") == [str(NOBODY)] * 4
    assert status_field(pid, "Groups") == []
    assert cg.pids() == [pid]
    assert cg.kill_all()
    assert proc.wait(timeout=5) == -9


def test_v1_oom_kill_is_seen_counted_and_watched(real: Cgroups, runner: Runner) -> None:
    cg = real.prepare("alpha", Limits(memory_mb=64, pids=20))
    before = cg.oom_kills()
    fired = threading.Event()
    watch = cg.watch_oom(fired.set)
    try:
        proc = runner.start(cg, ["python3", "-c", "b = bytearray(200<<20); import time; time.sleep(5)"])
        assert proc.wait(timeout=20) in (-9, 137)
        assert fired.wait(10), "watch_oom did not call back"
        assert cg.oom_kills() == before + 1
        usage = cg.usage()
        assert usage["memory_peak_bytes"] is not None and usage["memory_peak_bytes"] <= 64 * MB
    finally:
        started = time.monotonic()
        watch.close()
        watch.close()
        assert time.monotonic() - started < 1.0
    # a new start resets the peak (max_usage_in_bytes ← 0 resets it to the usage now)
    cg = real.prepare("alpha", Limits(memory_mb=64, pids=20))
    peak = cg.usage()["memory_peak_bytes"]
    assert peak is not None and peak < 32 * MB


def test_v1_watch_ends_when_the_cgroup_goes(real: Cgroups) -> None:
    """Removal also signals the eventfd; the watch must not mistake it for an OOM."""
    cg = real.prepare("alpha", Limits(memory_mb=64, pids=20))
    fired = threading.Event()
    watch = cg.watch_oom(fired.set)
    real.forget("alpha")
    wait_for(lambda: not watch._thread.is_alive(), what="the watch thread to end")
    assert not fired.is_set()
    watch.close()


def test_v1_pids_max_stops_a_fork_loop(real: Cgroups, runner: Runner, tmp_path: Path) -> None:
    cg = real.prepare("alpha", Limits(memory_mb=64, pids=20))
    out = tmp_path / "out"
    with out.open("w") as sink:
        runner.start(cg, ["sh", "-c", "for i in $(seq 1 50); do sleep 30 & done; wait"], stdout=sink, stderr=sink)
    most = 0

    def refused() -> bool:
        nonlocal most
        most = max(most, cg.usage()["pids"] or 0)
        return "Cannot fork" in out.read_text()

    wait_for(refused, what="the shell to report a fork failure")
    assert 0 < most <= 20
    events = cgroupfs.parse_keyed((cg.dirs["pids"] / "pids.events").read_text())
    assert events.get("max", 0) >= 1
    assert (cg.usage()["pids"] or 0) <= 20
    assert cg.kill_all()


FORKER = """
import os, time
while True:
    try:
        if os.fork() == 0:
            time.sleep(60)
            os._exit(0)
    except OSError:
        time.sleep(0.001)
"""


def test_v1_kill_all_ends_a_detached_and_forking_tree(real: Cgroups, runner: Runner) -> None:
    cg = real.prepare("alpha", Limits(memory_mb=256, pids=64))
    proc = runner.start(cg, ["sh", "-c", f'setsid sh -c "sleep 60" & python3 -c "{FORKER}" & wait'])

    def sessions() -> set[int]:
        found = set()
        for pid in cg.pids():
            try:
                found.add(int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[3]))
            except (OSError, IndexError, ValueError):
                pass
        return found

    wait_for(lambda: len(cg.pids()) >= 20 and len(sessions()) >= 2, what="a detached, forking tree")
    assert cg.kill_all(timeout=5)
    assert cg.pids() == []
    assert proc.wait(timeout=5) == -9
    wait_for(lambda: cg.usage()["pids"] == 0, what="every pid reaped")


def test_v1_usage_is_sane(real: Cgroups, runner: Runner) -> None:
    cg = real.prepare("alpha", Limits(memory_mb=128, pids=20))
    code = "b = bytearray(16<<20); print('ok', flush=True); import time; time.sleep(30)"
    proc = runner.start(cg, ["python3", "-c", code])
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ok"
    usage = cg.usage()
    current, peak, pids = usage["memory_bytes"], usage["memory_peak_bytes"], usage["pids"]
    assert current is not None and peak is not None
    assert 16 * MB <= current <= 128 * MB
    assert current <= peak <= 128 * MB
    assert pids == 1
    assert cg.kill_all()


def test_v1_forget_kills_and_removes(real: Cgroups, runner: Runner) -> None:
    cg = real.prepare("alpha", Limits(memory_mb=64, pids=20))
    proc = runner.start(cg, ["sh", "-c", "echo up; exec sleep 30"])
    assert proc.stdout is not None and proc.stdout.readline().strip() == "up"
    real.forget("alpha")
    assert proc.wait(timeout=5) == -9
    assert not any(path.exists() for path in cg.dirs.values())
    gone = real.agent("alpha")
    assert gone.usage() == {"memory_bytes": None, "memory_peak_bytes": None, "pids": None}
    assert gone.oom_kills() == 0 and gone.pids() == [] and gone.kill_all(timeout=0.1)
    with pytest.raises(OSError):
        gone.watch_oom(lambda: None)


def test_v1_prepare_on_reuse_kills_the_old_start(real: Cgroups, runner: Runner) -> None:
    cg = real.prepare("alpha", Limits(memory_mb=64, pids=20))
    proc = runner.start(cg, ["sh", "-c", "echo up; exec sleep 30"])
    assert proc.stdout is not None and proc.stdout.readline().strip() == "up"
    again = real.prepare("alpha", Limits(memory_mb=64, pids=20))
    assert again.pids() == []
    assert proc.wait(timeout=5) == -9
