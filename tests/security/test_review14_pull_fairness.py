"""A hostile agent cannot hold the daemon's pulls (issue 14 review): a git held
silent by a FIFO the agent put where git reads (its tip's loose object: no
check before the bundle can see every file git may open) is killed after
``idle`` seconds, not the whole timeout; the agent's next pulls run on a lane
of their own, backed off, so the other agents' pulls go on; and what one
agent brings over in an hour is bounded."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest
from test_workspace import UIDS, account, as_agent, make_op, make_paths, owner

from hyperhive import workspace_git as wg
from hyperhive.errors import BadRequest, Conflict, HiveError
from hyperhive.names import AgentName
from hyperhive.paths import StatePaths
from hyperhive.workspace import create_workspace
from hyperhive.workspace_pull import pull
from hyperhive.workspace_pulls import Pulls

BAD, GOOD = AgentName("ag1"), AgentName("ag2")


# e2e: through real git (clone, bundle, index-pack), an external tool, as setup.cfg's e2e marker says
pytestmark = pytest.mark.e2e


def _fifo_tip(paths: StatePaths, name: AgentName) -> None:
    """The agent commits, then turns its tip's loose object into a FIFO: git's
    read of it blocks, writing nothing."""
    as_agent(paths, name, "commit", "-q", "--allow-empty", "-m", "held")
    tip = as_agent(paths, name, "rev-parse", "HEAD")
    obj = paths.workspace(name) / ".git" / "objects" / tip[:2] / tip[2:]
    obj.unlink()
    os.mkfifo(obj)
    if os.geteuid() == 0:
        os.chown(obj, UIDS[name], UIDS[name])


def test_stream_to_kills_a_git_that_writes_nothing(tmp_path: Path) -> None:
    op, paths = make_op(tmp_path), make_paths(tmp_path)
    create_workspace(paths, BAD, str(op), owner("ag1"))
    _fifo_tip(paths, BAD)
    git_dir = str(paths.workspace(BAD) / ".git")
    t0 = time.monotonic()
    with open(tmp_path / "out", "wb") as out, pytest.raises(BadRequest, match="wrote nothing for 1 s"):
        wg.stream_to(out, git_dir, "bundle", "create", "--quiet", "-", "refs/heads/hive/ag1", timeout=60, idle=1)
    assert time.monotonic() - t0 < 15


def test_a_pull_held_by_a_fifo_fails_after_idle_not_the_timeout(tmp_path: Path) -> None:
    op, paths = make_op(tmp_path), make_paths(tmp_path)
    create_workspace(paths, BAD, str(op), owner("ag1"))
    _fifo_tip(paths, BAD)
    t0 = time.monotonic()
    with pytest.raises(BadRequest, match="wrote nothing"):
        pull(paths, BAD, account("ag1"), timeout=120, idle=1)
    assert time.monotonic() - t0 < 15
    assert not any(p.name.startswith("tmp_objdir") for p in (op / ".git" / "objects").iterdir())


def test_a_failing_agent_pulls_on_its_own_lane_and_backs_off(tmp_path: Path) -> None:
    op, paths = make_op(tmp_path), make_paths(tmp_path)
    create_workspace(paths, BAD, str(op), owner("ag1"))
    create_workspace(paths, GOOD, str(op), owner("ag2"))
    _fifo_tip(paths, BAD)
    as_agent(paths, GOOD, "commit", "-q", "--allow-empty", "-m", "good work")
    pulls = Pulls(paths, lambda n: account(n), workers=1, idle=2, interval=0.5)

    async def run() -> None:
        with pytest.raises(HiveError, match="wrote nothing"):
            await pulls.pull(BAD)  # held the one worker for `idle`, then failed
        assert pulls.failures("ag1") == 1
        held = asyncio.ensure_future(pulls.pull(BAD))  # on the suspect lane now: held again
        await asyncio.sleep(0.2)
        assert pulls.busy("ag1")
        t0 = time.monotonic()
        r = await pulls.pull(GOOD)  # the normal worker is free: not behind the held pull
        assert time.monotonic() - t0 < 1.5 and pulls.busy("ag1")
        assert r.commit == as_agent(paths, GOOD, "rev-parse", "HEAD")
        with pytest.raises(HiveError):
            await held
        assert pulls.failures("ag1") == 2
        # Its automatic pulls wait interval × 2 per failure: 2 s after the last one ended here.
        ended = time.monotonic()
        pulls.after_turn(BAD)
        await asyncio.sleep(0.3)
        assert not pulls.busy("ag1")
        deadline = time.monotonic() + 30
        while pulls.failures("ag1") < 3:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        assert time.monotonic() - ended >= 2 + 2 - 0.1  # 2 s of back-off, then 2 s held again
        assert pulls.failures("ag1") == 3 and not pulls.busy("ag1")

    try:
        asyncio.run(run())
    finally:
        pulls.close()


def test_what_an_agent_brings_over_in_an_hour_is_bounded(tmp_path: Path) -> None:
    op, paths = make_op(tmp_path), make_paths(tmp_path)
    create_workspace(paths, BAD, str(op), owner("ag1"))
    now = [1000.0]
    pulls = Pulls(paths, lambda n: account(n), hourly_bytes=2048, clock=lambda: now[0])
    work = paths.workspace(BAD)

    def big_commit(tag: str) -> None:
        (work / f"{tag}.bin").write_bytes(os.urandom(1500))
        if os.geteuid() == 0:
            os.chown(work / f"{tag}.bin", UIDS["ag1"], UIDS["ag1"])
        as_agent(paths, BAD, "add", f"{tag}.bin")
        as_agent(paths, BAD, "commit", "-q", "-m", tag)

    async def run() -> None:
        big_commit("one")
        first = await pulls.pull(BAD)
        assert 1500 < first.carried < 2048
        big_commit("two")  # past the hour's room: cut at the bytes left
        with pytest.raises(HiveError, match="more than"):
            await pulls.pull(BAD)
        now[0] += 10
        pulls._carried["ag1"].append((now[0], 10_000))  # as if a pull had filled the hour
        with pytest.raises(Conflict, match="in the last hour"):
            await pulls.pull(BAD)
        now[0] += 3601  # the hour has room again
        r = await pulls.pull(BAD)
        assert r.commit == as_agent(paths, BAD, "rev-parse", "HEAD")

    try:
        asyncio.run(run())
    finally:
        pulls.close()
