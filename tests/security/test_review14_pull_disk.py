"""Review of issue 14 (hostile agent): what the pull leaves on the operator's disk.

Each pull may carry up to MAX_BUNDLE_BYTES (1 GiB) into the operator's object
store, and an agent can start one whenever it likes (``turn_done`` on its own
socket starts a pull; no turn needed). The pack is written by ``index-pack``
before the connectivity check, and is not removed when the branch is refused,
nor are the objects of a branch the agent rewrites (the reflog of
``hive/<name>`` keeps every old tip, so no gc of the operator's removes them): with
fresh random content each time the
operator's filesystem fills at the speed of ``pack-objects``, while the
agent's own disk use stays flat (it deletes its copy after each pull).

Proposed fix (hyperhive/workspace_pull.py ``_carry``, ~lines 160-185): index
into a quarantine (``GIT_QUARANTINE_PATH``-style: a temp objects dir given as
``GIT_OBJECT_DIRECTORY`` with the real one as an alternate), check, and only
then move the pack in; delete it on refusal. Cap the bytes an agent may add
per hour / in total (a per-agent budget kept in ``agents/<n>/``), and write
the ref with ``--no-create-reflog``/``core.logAllRefUpdates=false`` or prune
the rewritten tips.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from test_config_repo import plain_git
from test_workspace import account, as_agent, make_op, make_paths, owner
from test_workspace_hostile import _mktree, agent_file

from hyperhive.errors import Conflict
from hyperhive.names import AgentName
from hyperhive.workspace import create_workspace
from hyperhive.workspace_pull import PullResult, pull
from hyperhive.workspace_pulls import Pulls

A = AgentName("ag1")


# e2e: through real git (clone, bundle, index-pack), an external tool, as setup.cfg's e2e marker says
pytestmark = pytest.mark.e2e


def _store_bytes(repo: Path) -> int:
    total = 0
    for d, _dirs, files in os.walk(repo / ".git" / "objects"):
        total += sum(os.lstat(os.path.join(d, f)).st_size for f in files)
    return total


def test_a_refused_pull_leaves_nothing_in_the_operators_object_store(tmp_path: Path) -> None:
    op, paths = make_op(tmp_path), make_paths(tmp_path)
    create_workspace(paths, A, str(op), owner("ag1"))
    before = _store_bytes(op)
    for i in range(3):
        f = agent_file(paths, f"big{i}", "")
        f.write_bytes(os.urandom(2 << 20))  # incompressible: the pack is its size
        blob = as_agent(paths, "ag1", "hash-object", "-w", f.name)
        evil = agent_file(paths, "evil", f'[submodule "../../../evil{i}"]\n\tpath = evil\n\turl = ./evil\n')
        bad = as_agent(paths, "ag1", "hash-object", "-w", evil.name)
        # A .gitmodules whose name climbs out, after the big blob ("-big" sorts first): index-pack
        # --strict refuses the pack once it has written the 2 MiB.
        tree = _mktree(paths, f"100644 blob {blob}\t-big\n100644 blob {bad}\t.gitmodules\n")
        commit = as_agent(paths, "ag1", "commit-tree", tree, "-m", f"refused {i}")
        as_agent(paths, "ag1", "update-ref", "refs/heads/hive/ag1", commit)
        with pytest.raises(Conflict, match="refused by the operator"):
            pull(paths, A, account("ag1"))
        f.unlink()
    grown = _store_bytes(op) - before
    assert grown < 1 << 20, f"three refused pulls left {grown >> 10} KiB in the operator's repo"


def test_rewritten_branches_do_not_pile_up_in_the_operators_repo(tmp_path: Path) -> None:
    op, paths = make_op(tmp_path), make_paths(tmp_path)
    create_workspace(paths, A, str(op), owner("ag1"))
    before = _store_bytes(op)
    for i in range(3):
        f = agent_file(paths, f"big{i}", "")
        f.write_bytes(os.urandom(2 << 20))
        blob = as_agent(paths, "ag1", "hash-object", "-w", f.name)
        tree = _mktree(paths, f"100644 blob {blob}\tbig\n")
        commit = as_agent(paths, "ag1", "commit-tree", tree, "-m", f"fresh root {i}")  # unrelated each time
        as_agent(paths, "ag1", "update-ref", "refs/heads/hive/ag1", commit)
        assert pull(paths, A, account("ag1")).rewritten == (i > 0)
        f.unlink()
    # The daemon never deletes objects from the operator's repo (git's gc keeps a grace period for
    # objects in use by a git running meanwhile): the old tips must be garbage the operator's gc
    # removes, i.e. on no ref and in no reflog. An operator's gc, with no grace period:
    plain_git(op, "gc", "-q", "--prune=now")
    assert not (op / ".git" / "logs" / "refs" / "heads" / "hive" / "ag1").exists()
    grown = _store_bytes(op) - before
    # Only the current tip's objects (2 MiB) are the agent's work; the rest is what it threw away.
    assert grown < 3 << 20, f"the operator's repo keeps {grown >> 20} MiB of three rewritten 2 MiB branches"


class _Timed(Pulls):
    """Pulls that note when each job starts (loop-independent monotonic time)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.starts: list[float] = []

    def _job(self, name: AgentName, room: int) -> PullResult | None:
        self.starts.append(time.monotonic())
        return super()._job(name, room)


async def wait_until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "timed out"
        await asyncio.sleep(0.01)


def test_an_agent_cannot_start_pulls_at_will(tmp_path: Path) -> None:
    op, paths = make_op(tmp_path), make_paths(tmp_path)
    create_workspace(paths, A, str(op), owner("ag1"))
    pulls = _Timed(paths, lambda _n: account("ag1"), interval=1.0)

    async def run() -> None:
        t0 = time.monotonic()
        while time.monotonic() - t0 < 2.5:  # turn_done as fast as the agent can send it
            pulls.after_turn(A)
            await asyncio.sleep(0.01)
        await asyncio.sleep(1.1)  # the last request's pull starts by then
        await wait_until(lambda: not pulls.busy("ag1"))
        n = len(pulls.starts)
        gaps = [b - a for a, b in zip(pulls.starts, pulls.starts[1:], strict=False)]
        assert 3 <= n <= 4 and all(g >= 0.95 for g in gaps), pulls.starts
        pulls.after_turn(A)  # past the interval: at once
        await wait_until(lambda: not pulls.busy("ag1") and len(pulls.starts) == n + 1)
        r = await pulls.pull(A)  # the operator's pull does not wait for the interval
        assert r.commit is not None and len(pulls.starts) == n + 2
        assert pulls.starts[-1] - pulls.starts[-2] < 0.9, pulls.starts

    try:
        asyncio.run(run())
    finally:
        pulls.close()
