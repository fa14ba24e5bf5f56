"""F18: kept state dirs, and purge refusing every path that leaves the state dir."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hyperhive.errors import BadName, Conflict, UnknownAgent
from hyperhive.paths import StatePaths
from hyperhive.tombstones import credentials_stored, dir_usage, list_tombstones, purge

LIVE = {"m1nd", "coder"}

BAD_NAMES = ["..", ".", "a/../..", "m1nd/..", "/", "/etc", str(Path("/tmp").resolve()), "x\x00", "old\x00",
             "", "../sentinel.txt", "old/..", "old/../old", "./old", "OLD", "-rf", 7, None, ["old"]]


def snapshot(top: Path) -> dict[str, tuple[int, bytes]]:
    """Every path under ``top`` with its kind and contents."""
    out: dict[str, tuple[int, bytes]] = {}
    for dirpath, dirs, files in os.walk(top, followlinks=False):
        for n in dirs + files:
            p = Path(dirpath, n)
            st = p.lstat()
            data = os.readlink(p).encode() if p.is_symlink() else (p.read_bytes() if p.is_file() else b"")
            out[str(p.relative_to(top))] = (st.st_mode, data)
    return out


@pytest.fixture
def hive(tmp_path: Path) -> StatePaths:
    """A state dir with a sentinel beside it, two live agents and one tombstone."""
    (tmp_path / "sentinel.txt").write_text("must survive\n")
    paths = StatePaths(tmp_path / "state")
    paths.root.mkdir()
    (paths.root / "hive.sqlite").write_bytes(b"db")
    for name in ("m1nd", "coder", "old"):
        (paths.agents / name / "config").mkdir(parents=True)
        (paths.agents / name / "config" / "agent.json").write_text("{}\n")
        (paths.agents / name / "state").mkdir()
        (paths.applied_root / name).mkdir(parents=True)
        (paths.applied_root / name / "agent.json").write_text("{}\n")
    return paths


def test_lists_dirs_without_a_live_container(hive: StatePaths) -> None:
    creds = hive.agents / "old" / "state" / ".claude"
    creds.mkdir()
    (creds / ".credentials.json").write_text('{"token": "x"}')
    (hive.agents / "old" / "state" / "notes.md").write_bytes(b"n" * 1000)
    old_time = 1_700_000_000.0
    for dirpath, dirs, files in os.walk(hive.agents / "old"):
        for n in [*dirs, *files, "."]:
            os.utime(Path(dirpath, n), (old_time, old_time))
    (hive.agents / "not_a_name").mkdir()  # never a container: not listed, not purgeable
    (hive.agents / "stray-file").write_text("x")
    [t] = list_tombstones(hive, LIVE, now=old_time + 3600)
    assert t.name == "old"
    assert t.size_bytes == 1000 + len('{"token": "x"}') + len("{}\n")
    assert (t.modified_at, t.age_seconds) == (old_time, 3600.0)
    assert t.credentials_kept is True
    assert t.to_wire()["credentials_kept"] is True


def test_credentials_absent(hive: StatePaths) -> None:
    [t] = list_tombstones(hive, LIVE, now=0)
    assert t.credentials_kept is False


def test_a_symlinked_agent_dir_is_no_tombstone(hive: StatePaths, tmp_path: Path) -> None:
    (hive.agents / "link").symlink_to(tmp_path)
    assert [t.name for t in list_tombstones(hive, LIVE, now=0)] == ["old"]


def test_dir_usage_does_not_follow_symlinks(tmp_path: Path) -> None:
    (tmp_path / "big").write_bytes(b"b" * 5000)
    d = tmp_path / "d"
    d.mkdir()
    (d / "f").write_bytes(b"12345")
    (d / "ln").symlink_to(tmp_path / "big")
    (d / "dl").symlink_to(tmp_path)
    assert dir_usage(d)[0] == 5


def test_purge_removes_both_dirs(hive: StatePaths, tmp_path: Path) -> None:
    before = snapshot(tmp_path)
    removed = purge(hive, "old", LIVE)
    assert removed == [(hive.agents / "old").resolve(), (hive.applied_root / "old").resolve()]
    assert not (hive.agents / "old").exists() and not (hive.applied_root / "old").exists()
    after = snapshot(tmp_path)
    assert {k for k in before if k not in after} == {k for k in before if "/old" in k}
    assert (tmp_path / "sentinel.txt").read_text() == "must survive\n"


def test_purge_with_only_one_dir_left(hive: StatePaths) -> None:
    purge(hive, "old", LIVE)
    (hive.applied_root / "old").mkdir()
    assert purge(hive, "old", LIVE) == [(hive.applied_root / "old").resolve()]
    with pytest.raises(UnknownAgent):
        purge(hive, "old", LIVE)


def test_purging_a_live_agent_is_refused(hive: StatePaths, tmp_path: Path) -> None:
    before = snapshot(tmp_path)
    with pytest.raises(Conflict):
        purge(hive, "coder", LIVE)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
def test_bad_names_touch_nothing(hive: StatePaths, tmp_path: Path, name: object) -> None:
    before = snapshot(tmp_path)
    with pytest.raises(BadName):
        purge(hive, name, LIVE)
    assert snapshot(tmp_path) == before
    assert (tmp_path / "sentinel.txt").read_text() == "must survive\n"


@pytest.mark.parametrize("where", ["agents", "applied"])
@pytest.mark.parametrize("to", ["outside", "sibling", "root"])
def test_symlinks_are_never_followed(hive: StatePaths, tmp_path: Path, where: str, to: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_text("keep")
    target = {"outside": outside, "sibling": hive.agents / "coder", "root": hive.root}[to]
    base = hive.agents if where == "agents" else hive.applied_root
    (hive.agents / "evil").mkdir(exist_ok=True)
    if where == "agents":
        (hive.agents / "evil").rmdir()
    (base / "evil").symlink_to(target)
    before = snapshot(tmp_path)
    with pytest.raises(BadName):
        purge(hive, "evil", LIVE)
    assert snapshot(tmp_path) == before  # nothing removed, not even the half that was safe


def test_a_symlinked_agents_root_is_refused(tmp_path: Path) -> None:
    (tmp_path / "sentinel.txt").write_text("must survive\n")
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "old").mkdir(parents=True)
    paths = StatePaths(tmp_path / "state")
    paths.root.mkdir()
    paths.agents.symlink_to(elsewhere)
    with pytest.raises(BadName):
        purge(paths, "old", set())
    assert (elsewhere / "old").is_dir()


# --- the agent's own state is never followed ---------------------------------------------
@pytest.fixture
def host_creds(tmp_path: Path) -> Path:
    d = tmp_path / "host-home" / ".claude"
    d.mkdir(parents=True)
    (d / ".credentials.json").write_text('{"host": "secret"}')
    return d


def test_linked_credentials_are_not_kept(hive: StatePaths, host_creds: Path) -> None:
    """``.claude -> a dir holding real credentials`` and ``.credentials.json -> a
    file`` both count as none: neither link is followed."""
    state = hive.agents / "old" / "state"
    (state / ".claude").symlink_to(host_creds)
    [t] = list_tombstones(hive, LIVE, now=0)
    assert t.credentials_kept is False
    (state / ".claude").unlink()
    (state / ".claude").mkdir()
    (state / ".claude" / ".credentials.json").symlink_to(host_creds / ".credentials.json")
    [t] = list_tombstones(hive, LIVE, now=0)
    assert t.credentials_kept is False


def test_credentials_stored(hive: StatePaths, host_creds: Path) -> None:
    assert credentials_stored(hive.agents, "old") is False
    (hive.agents / "old" / "state" / ".claude").mkdir()
    (hive.agents / "old" / "state" / ".claude" / ".credentials.json").write_text("{}")
    assert credentials_stored(hive.agents, "old") is True
    assert credentials_stored(hive.agents, "..") is False  # not a single component: no agent
    assert credentials_stored(hive.agents, "nobody") is False


def test_size_counts_no_host_file_through_a_link(hive: StatePaths, tmp_path: Path) -> None:
    (tmp_path / "host").mkdir()
    (tmp_path / "host" / "big").write_bytes(b"h" * 100_000)
    state = hive.agents / "old" / "state"
    (state / "dir-link").symlink_to(tmp_path / "host")
    (state / "file-link").symlink_to(tmp_path / "host" / "big")
    [t] = list_tombstones(hive, LIVE, now=0)
    assert t.size_bytes == len("{}\n")  # the config only; each link counted as itself


def test_purge_removes_the_agents_links_not_what_they_point_at(hive: StatePaths, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_text("keep")
    state = hive.agents / "old" / "state"
    (state / "to-dir").symlink_to(outside)
    (state / "to-file").symlink_to(outside / "precious")
    (state / "nested").mkdir()
    (state / "nested" / "to-root").symlink_to(hive.root)
    purge(hive, "old", LIVE)
    assert not (hive.agents / "old").exists()
    assert (outside / "precious").read_text() == "keep"
    assert (hive.root / "hive.sqlite").read_bytes() == b"db"
    assert (hive.agents / "coder" / "config" / "agent.json").exists()
