"""disk_use (issue 16): the hostile-proof walk of an agent's dir on real temp
dirs (sparse files, hard links, links to /, FIFOs, mounts, the bounds), the
meter's cache, and the texts `hive ls` shows."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest
from support import passable, small_tmpfs, wait_for

from hyperhive.cli_ls import LS_COLUMNS, format_ls
from hyperhive.disk_use import DiskMeter, DiskUse, measure, mount_points
from hyperhive.paths import StatePaths
from hyperhive.web.dashboard.views import container_row, disk_text

MIB = 1 << 20
ROOT = os.geteuid() == 0


@pytest.fixture
def agents(tmp_path: Path) -> Path:
    d = tmp_path / "agents"
    (d / "a" / "work").mkdir(parents=True)
    (d / "a" / "state").mkdir()
    return d


def one_byte_files(d: Path, n: int) -> None:
    """``f0`` … ``f<n-1>`` in ``d``, one byte each (openat, write, close: no Python file objects)."""
    dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for i in range(n):
            fd = os.open(f"f{i}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644, dir_fd=dfd)
            os.write(fd, b"z")
            os.close(fd)
    finally:
        os.close(dfd)


def blocks_of(*files: Path) -> int:
    return sum(os.lstat(f).st_blocks * 512 for f in files)


def base_of(agents: Path) -> int:
    """What the empty layout (the dirs) takes."""
    got = measure(agents, "a")
    assert got is not None and got.complete
    return got.bytes


def test_plain_files_counted_by_their_blocks(agents: Path) -> None:
    empty = base_of(agents)
    f = agents / "a" / "work" / "data"
    f.write_bytes(os.urandom(3 * MIB))
    (agents / "a" / "harness.log").write_bytes(b"x" * 5000)  # the daemon's files in the dir count too
    got = measure(agents, "a")
    assert got is not None and got.complete
    assert got.bytes == empty + blocks_of(f, agents / "a" / "harness.log")
    assert got.bytes >= 3 * MIB
    assert got.files == 5  # a/, work/, state/, data, harness.log
    assert got.at == pytest.approx(time.time(), abs=5)


def test_sparse_terabyte_counts_what_it_takes(agents: Path) -> None:
    empty = base_of(agents)
    f = agents / "a" / "work" / "sparse"
    with open(f, "wb") as fh:
        fh.truncate(1 << 40)
        fh.seek((1 << 40) - 4096)
        fh.write(b"y" * 4096)
    got = measure(agents, "a")
    assert got is not None and got.complete
    assert got.bytes == empty + blocks_of(f)
    assert got.bytes < MIB  # not its apparent terabyte


def test_hard_links_counted_once(agents: Path) -> None:
    f = agents / "a" / "work" / "big"
    f.write_bytes(os.urandom(2 * MIB))
    one = measure(agents, "a")
    for i in range(5):
        os.link(f, agents / "a" / "state" / f"link{i}")
    got = measure(agents, "a")
    assert one is not None and got is not None and got.complete
    assert got.bytes == one.bytes
    assert got.files == one.files


def test_symlink_to_root_not_followed(agents: Path) -> None:
    empty = measure(agents, "a")
    os.symlink("/", agents / "a" / "work" / "root")
    os.symlink("/usr", agents / "a" / "state" / "usr")
    got = measure(agents, "a")
    assert empty is not None and got is not None and got.complete
    assert got.files == empty.files + 2  # the links themselves
    assert got.bytes - empty.bytes < 64 * 1024  # not the host's disk


def test_agent_dir_that_is_a_link_not_followed(agents: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "secret").write_bytes(os.urandom(MIB))
    os.symlink(elsewhere, agents / "b")
    got = measure(agents, "b")
    assert got is not None
    assert (got.bytes, got.files, got.complete) == (0, 0, False)
    assert measure(agents, "nobody") is None  # not there at all: not measured


def test_fifo_counted_never_opened(agents: Path) -> None:
    """Opening a FIFO nobody writes to would hang: the walk must finish anyway."""
    empty = measure(agents, "a")
    os.mkfifo(agents / "a" / "work" / "pipe")
    os.mkfifo(agents / "a" / "state" / "pipe2")
    out: list[DiskUse | None] = []
    t = threading.Thread(target=lambda: out.append(measure(agents, "a")), daemon=True)
    t.start()
    t.join(10)
    assert not t.is_alive(), "the walk opened a FIFO"
    [got] = out
    assert empty is not None and got is not None and got.complete
    assert got.files == empty.files + 2


def test_unix_socket_counted_never_connected(agents: Path) -> None:
    import socket

    empty = measure(agents, "a")
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(agents / "a" / "state" / "web.sock"))
        got = measure(agents, "a")
    assert empty is not None and got is not None and got.complete
    assert got.files == empty.files + 1


@pytest.mark.skipif(not ROOT, reason="mounts need root")
def test_other_filesystem_not_entered(agents: Path) -> None:
    empty = measure(agents, "a")
    with small_tmpfs(agents / "a" / "work" / "mnt", "16m") as mnt:
        (mnt / "inside").write_bytes(os.urandom(4 * MIB))
        got = measure(agents, "a")
    assert empty is not None and got is not None and got.complete
    assert got.bytes - empty.bytes < MIB


@pytest.mark.skipif(not ROOT, reason="mounts need root")
def test_bind_mount_of_the_same_filesystem_not_entered(agents: Path, tmp_path: Path) -> None:
    source = tmp_path / "host-dir"
    source.mkdir()
    (source / "host-file").write_bytes(os.urandom(4 * MIB))
    target = agents / "a" / "work" / "bound"
    target.mkdir()
    empty = measure(agents, "a")
    r = subprocess.run(["mount", "--bind", str(source), str(target)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"mount --bind: {r.stderr.decode().strip()}")
    try:
        assert os.stat(target).st_dev == os.stat(agents).st_dev  # st_dev alone would not tell
        assert "work/bound" in mount_points(agents / "a")
        got = measure(agents, "a")
        # And the meter, which reads the mounts once a round for every agent.
        meter = DiskMeter(StatePaths(tmp_path, agents_root=agents), interval=60)
        try:
            meter.peek(["a"])
            assert meter.wait_round(0, 10)
            metered = meter.peek(["a"])["a"]
        finally:
            meter.close()
    finally:
        subprocess.run(["umount", "-l", str(target)], check=False)
    assert empty is not None and got is not None and metered is not None
    assert got.bytes - empty.bytes < MIB
    assert metered.bytes - empty.bytes < MIB


def test_mount_points_parsed_with_escapes(tmp_path: Path) -> None:
    under = tmp_path / "agents"
    under.mkdir()
    real = os.path.realpath(under).replace(" ", "\\040").encode()
    text = b"\n".join([
        b"22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw",
        b"30 22 0:5 / " + real + b"/a/work/my\\040dir rw - tmpfs tmpfs rw",
        b"31 22 0:6 / " + real + b"/b rw - tmpfs tmpfs rw",
        b"32 22 0:7 / " + real + b" rw - tmpfs tmpfs rw",  # the dir itself: not below it
        b"33 22 0:8 / " + real + b"x/c rw - tmpfs tmpfs rw",  # a sibling with a longer name
        b"garbage",
    ])
    assert mount_points(under, text) == frozenset({"a/work/my dir", "b"})


def test_entry_bound_gives_a_lower_bound(agents: Path) -> None:
    one_byte_files(agents / "a" / "work", 1000)
    got = measure(agents, "a", max_entries=100)
    assert got is not None and not got.complete
    assert got.files <= 101
    full = measure(agents, "a")
    assert full is not None and full.complete and full.files == 1003


def test_time_bound_gives_a_lower_bound(agents: Path) -> None:
    one_byte_files(agents / "a" / "work", 600)
    ticks = iter(range(1_000_000))  # each look at the clock: a second later
    got = measure(agents, "a", budget=2.5, clock=lambda: float(next(ticks)))
    assert got is not None and not got.complete
    assert 200 < got.files < 600  # stopped at a look, a few hundred entries in
    spent = measure(agents, "a", budget=0.0)
    assert spent is not None and not spent.complete


def test_depth_bound(agents: Path) -> None:
    d = agents / "a" / "work"
    for i in range(80):
        d = d / f"d{i}"
    d.mkdir(parents=True)
    got = measure(agents, "a")
    assert got is not None and not got.complete
    deep = measure(agents, "a", max_depth=200)
    assert deep is not None and deep.complete and deep.files == 3 + 80  # a/, work/, state/ and the chain


def measure_unprivileged(agents: Path) -> dict[str, object]:
    """``measure`` as a uid that cannot read everything (root reads all: as nobody, in a
    child process of this one: forked, it drops to uid and gid 65534, measures, reports
    through a pipe and exits; no interpreter to start)."""
    if not ROOT:
        got = measure(agents, "a")
        assert got is not None
        return got.to_wire()
    passable(agents / "a")
    for d in (agents, agents / "a", agents / "a" / "work", agents / "a" / "state"):
        os.chmod(d, 0o755)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never back into pytest, whatever happens
        status = 1
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            os.chdir("/")
            d = measure(agents, "a")
            os.write(w, json.dumps(None if d is None else d.to_wire()).encode())
            status = 0
        finally:
            os._exit(status)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        report = f.read()
    _, waited = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(waited) == 0
    out: dict[str, object] = json.loads(report)
    return out


def test_unreadable_dir_skipped_and_marked(agents: Path) -> None:
    locked = agents / "a" / "state" / "locked"
    locked.mkdir()
    (locked / "hidden").write_bytes(os.urandom(MIB))
    os.chmod(locked, 0o000)
    try:
        got = measure_unprivileged(agents)
    finally:
        os.chmod(locked, 0o700)
    assert got["complete"] is False
    assert isinstance(got["bytes"], int) and got["bytes"] < MIB


def test_meter_answers_from_the_cache_and_renews_when_stale(agents: Path, tmp_path: Path) -> None:
    paths = StatePaths(tmp_path, agents_root=agents)
    now = [1000.0]  # the meter's clock: a figure's age
    meter = DiskMeter(paths, interval=0.5, clock=lambda: now[0])
    try:
        assert meter.peek(["a", "gone"]) == {"a": None, "gone": None}  # not measured yet: asked for
        assert meter.wait_round(0, 10)
        first = meter.peek(["a"])["a"]
        assert first is not None and first.complete
        assert meter.peek(["gone"])["gone"] is None  # no such dir
        (agents / "a" / "work" / "new").write_bytes(os.urandom(2 * MIB))
        now[0] = 1000.49
        assert meter.peek(["a"])["a"] == first  # fresh: the cached figure, no walk
        assert meter.asked() == frozenset()
        now[0] = 1000.5  # the interval passed: stale
        got = wait_for(lambda: (d := meter.peek(["a"])["a"]) is not None and d.bytes >= first.bytes + 2 * MIB
                       and d, timeout=10, interval=0.002, what="the renewed figure")
        assert got.at > first.at
        assert meter.wire(["a"])["a"] == got.to_wire()
    finally:
        meter.close()


def test_meter_does_not_walk_a_fresh_figure_again(agents: Path, tmp_path: Path) -> None:
    meter = DiskMeter(StatePaths(tmp_path, agents_root=agents), interval=3600)
    try:
        meter.peek(["a"])
        assert meter.wait_round(0, 10)
        first = meter.peek(["a"])["a"]
        meter.close()  # its worker takes up no more asks: what the peeks ask for stays asked, to be seen
        for _ in range(50):
            assert meter.peek(["a"])["a"] is first
        assert meter.asked() == frozenset()  # no second round was asked for
        assert meter.rounds == 1
        assert meter.peek(["b"]) == {"b": None} and meter.asked() == {"b"}  # (one not measured is asked for)
    finally:
        meter.close()


def test_peek_is_fast_with_a_thousand_agents(agents: Path, tmp_path: Path) -> None:
    names = [f"ag{i}" for i in range(1000)]
    meter = DiskMeter(StatePaths(tmp_path, agents_root=agents), interval=3600)
    try:
        start = time.monotonic()
        for _ in range(10):
            meter.peek(names)
        assert (time.monotonic() - start) / 10 < 0.05
    finally:
        meter.close()


@pytest.mark.parametrize(("disk", "text"), [
    (None, None),
    ({}, None),
    ({"bytes": None, "files": 0, "complete": True, "at": 0.0}, None),
    ({"bytes": 0, "files": 1, "complete": True, "at": 0.0}, "0B"),
    ({"bytes": 4096, "files": 3, "complete": True, "at": 0.0}, "4.0K"),
    ({"bytes": 112 * MIB, "files": 3, "complete": True, "at": 0.0}, "112M"),
    ({"bytes": int(1.2 * (1 << 30)), "files": 9, "complete": True, "at": 0.0}, "1.2G"),
    ({"bytes": int(1.2 * (1 << 30)), "files": 9, "complete": False, "at": 0.0}, "≥1.2G"),
    ({"bytes": 3 << 40, "files": 9, "complete": True, "at": 0.0}, "3.0T"),
])
def test_disk_text(disk: dict[str, object] | None, text: str | None) -> None:
    assert disk_text(disk) == text


def row(name: str, disk: dict[str, object] | None) -> dict[str, object]:
    return {"name": name, "role": "agent", "state": "stopped", "disk": disk}


def test_ls_table_has_a_disk_column() -> None:
    assert LS_COLUMNS[-2:] == ("DISK", "BADGES")
    lines = format_ls([row("a", DiskUse(int(1.2 * (1 << 30)), 10, True, 0.0).to_wire()),
                       row("b", DiskUse(5 * MIB, 10, False, 0.0).to_wire()), row("c", None)]).splitlines()
    at = lines[0].index("DISK")
    assert [ln[at:].split()[0] for ln in lines[1:]] == ["1.2G", "≥5.0M", "-"]


def test_dashboard_row_carries_disk() -> None:
    from hyperhive.actors.snapshots import ContainerSnapshot

    snap = ContainerSnapshot(name="a", role="agent", state="stopped")
    disk = DiskUse(7 * MIB, 4, False, 12.0).to_wire()
    got = container_row(snap, {}, [], None, 0.0, disk=disk)
    assert got["disk"] == disk and got["disk_text"] == "≥7.0M"
    assert container_row(snap, {}, [], None, 0.0)["disk"] is None
