"""Third review of issue 14 (hostile agent): a directory chain a thousand deep
in its own state dir breaks the kept-state listing and makes its purge
impossible.

`tombstones.dir_usage` walked with ``os.fwalk`` and `tombstones.purge` removed
with ``shutil.rmtree``; on Python 3.11 and 3.12 both recurse once per
directory level (3.13's do not). The agent owns ``agents/<n>/state`` and
``work``: ``mkdir`` 1100 levels of ``a/`` (a second of its time, 1100 inodes),
then it is destroyed (a tombstone). From then on:

- every ``list_tombstones`` raises RecursionError: ``hive tombstones`` answers
  Internal, and the dashboard's ``observe_files`` (the containers' badges and
  workspaces too, one call) fails with it;
- ``hive purge NAME --force`` (and ``destroy --purge``) raise RecursionError
  after removing part of the tree: the state can never be purged through the
  daemon, forced or not.

Fixed (hyperhive/tombstones.py): ``dir_usage`` is a loop with one fd per level
and a budget (entries, levels); a tree ``rmtree`` cannot remove for its depth
is finished by ``rm -rf`` (coreutils: any depth, links unfollowed).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import passable
from test_workspace import UIDS

from hyperhive.names import AgentName
from hyperhive.paths import StatePaths
from hyperhive.tombstones import list_tombstones, purge

AG = AgentName("ag1")
DEPTH = 1100


def _as_agent(code: str, *args: str) -> None:
    ids = {"user": UIDS["ag1"], "group": UIDS["ag1"], "extra_groups": []} if os.geteuid() == 0 else {}
    subprocess.run([sys.executable, "-c", code, *args], check=True, timeout=120, **ids)


DEEP = """
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
for i in range(int(sys.argv[2])):
    os.mkdir("a", dir_fd=fd)
    nfd = os.open("a", os.O_RDONLY, dir_fd=fd)
    os.close(fd)
    fd = nfd
with open(os.open("bottom.txt", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd), "w") as f:
    f.write("deep")
os.symlink("/etc/passwd", "passwd", dir_fd=fd)  # removed as a link, never followed
"""


@pytest.fixture
def deep(tmp_path: Path) -> Iterator[StatePaths]:
    """The tombstone; removed after by ``rm -rf`` whatever the test left (pytest's own clean-up
    of its temp dirs is ``shutil.rmtree``: the chain would break it for every later run)."""
    try:
        yield _tombstone(tmp_path)
    finally:
        subprocess.run(["rm", "-rf", "--", str(tmp_path / "state")], check=False, timeout=120)


def _tombstone(tmp_path: Path) -> StatePaths:
    paths = StatePaths(tmp_path / "state")
    state = paths.agents / AG / "state"
    state.mkdir(parents=True)
    (paths.agents / AG / "config").mkdir()
    (paths.applied_root / AG).mkdir(parents=True)
    if os.geteuid() == 0:
        os.chown(state, UIDS["ag1"], UIDS["ag1"])
        passable(paths.agents / AG)
    _as_agent(DEEP, str(state), str(DEPTH))  # what the agent did while it ran
    return paths


def test_a_deep_tree_does_not_break_the_tombstone_listing(deep: StatePaths) -> None:
    [t] = list_tombstones(deep, set(), now=0.0, workspaces=True)
    assert t.name == AG and t.workspace is None


def test_a_deep_tree_is_purged(deep: StatePaths) -> None:
    paths = deep
    before = Path("/etc/passwd").read_bytes()
    removed = purge(paths, AG, set())
    assert {p.name for p in removed} == {AG}
    assert not (paths.agents / AG).exists() and not (paths.applied_root / AG).exists()
    assert Path("/etc/passwd").read_bytes() == before
