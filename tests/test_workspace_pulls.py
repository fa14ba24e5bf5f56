"""The daemon's pull table (issue 14): one pull at a time per agent, requests
made meanwhile served by one more pull after it, a caller that goes away
costing the others nothing; real pulls of real repos end to end."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
from test_workspace import account, as_agent, make_op, make_paths, owner

from hyperhive.errors import BadRequest
from hyperhive.names import AgentName
from hyperhive.workspace import create_workspace
from hyperhive.workspace_pull import PullResult
from hyperhive.workspace_pulls import Pulls

A = AgentName("ag1")


# e2e: through real git (clone, bundle, index-pack), an external tool, as setup.cfg's e2e marker says
pytestmark = pytest.mark.e2e


class Gated(Pulls):
    """Pulls whose job waits for the test's go (to hold one running)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.go = threading.Event()
        self.runs = 0

    def _job(self, name: AgentName, room: int) -> PullResult | None:
        self.runs += 1
        self.go.wait(10)
        return super()._job(name, room)


def test_requests_while_one_runs_share_one_more(tmp_path: Path) -> None:
    op, paths = make_op(tmp_path), make_paths(tmp_path)
    create_workspace(paths, A, str(op), owner("ag1"))
    as_agent(paths, "ag1", "commit", "-q", "--allow-empty", "-m", "one")
    pulls = Gated(paths, lambda _n: account("ag1"))

    async def run() -> None:
        first = asyncio.ensure_future(pulls.pull(A))
        await asyncio.sleep(0)
        assert pulls.busy("ag1")
        pulls.after_turn(A)
        waiting = [asyncio.ensure_future(pulls.pull(A)) for _ in range(3)]
        gone = asyncio.ensure_future(pulls.pull(A))
        await asyncio.sleep(0)
        gone.cancel()  # a caller that hung up
        pulls.go.set()
        r1 = await first
        rest = await asyncio.gather(*waiting)
        assert r1.commit == as_agent(paths, "ag1", "rev-parse", "HEAD")
        assert all(r == rest[0] for r in rest) and rest[0].ahead == 1
        assert pulls.runs == 2
        assert not pulls.busy("ag1")

    try:
        asyncio.run(run())
    finally:
        pulls.close()


def test_no_repo_no_pull(tmp_path: Path) -> None:
    paths = make_paths(tmp_path)
    create_workspace(paths, A, None, owner("ag1"))
    pulls = Pulls(paths, lambda _n: account("ag1"))

    async def run() -> None:
        pulls.after_turn(A)  # nothing to do, nothing logged as a failure
        with pytest.raises(BadRequest, match="no workspace with an operator repository"):
            await pulls.pull(A)

    try:
        asyncio.run(run())
    finally:
        pulls.close()
