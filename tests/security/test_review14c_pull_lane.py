"""Third review of issue 14 (hostile agent): one good pull puts an agent whose
pulls stall back on the shared lane.

`Pulls` runs the pull of an agent whose last pull failed on a lane of its own
(one worker), so that a git the agent holds silent (a FIFO where git reads:
killed after ``idle``, 60 s) does not hold the WORKERS (2) every other agent's
pulls and ``hive pull`` share. But the lane follows ``failures`` (failed pulls
*in a row*), and one pull that goes through resets it. The agent alternates:
a held pull (a new commit whose loose object is a FIFO: ``idle`` seconds on a
shared worker, then refused), then a pull that goes through (its branch put
back on a commit the operator's repo has: instant), then a held one again, on
the shared lane again. Two such agents keep both shared workers held nearly
all the time: every other agent's pull, and the operator's ``hive pull``,
waits up to ``idle`` behind them, over and over.

Fixed (hyperhive/workspace_pulls.py ``_start``): an agent stays on the suspect
lane for ``SUSPECT_SECONDS`` (10 min) after its last failure, whatever came
between (its back-off still resets on a pull that goes through).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from test_review14_pull_fairness import BAD, GOOD, _fifo_tip
from test_workspace import account, as_agent, make_op, make_paths, owner

from hyperhive.errors import HiveError
from hyperhive.workspace import create_workspace
from hyperhive.workspace_pulls import Pulls

IDLE = 3.0


# e2e: through real git (clone, bundle, index-pack), an external tool, as setup.cfg's e2e marker says
pytestmark = pytest.mark.e2e


def test_a_good_pull_between_held_ones_does_not_put_the_agent_back_on_the_shared_lane(tmp_path: Path) -> None:
    op, paths = make_op(tmp_path), make_paths(tmp_path)
    base = create_workspace(paths, BAD, str(op), owner("ag1"))
    create_workspace(paths, GOOD, str(op), owner("ag2"))
    assert base is not None and base.base is not None
    as_agent(paths, GOOD, "commit", "-q", "--allow-empty", "-m", "good work")
    pulls = Pulls(paths, lambda n: account(n), workers=1, idle=IDLE, interval=0.1)

    async def run() -> None:
        _fifo_tip(paths, BAD)
        with pytest.raises(HiveError, match="wrote nothing"):
            await pulls.pull(BAD)  # held one worker for `idle`, then refused
        as_agent(paths, BAD, "update-ref", "refs/heads/hive/ag1", str(base.base))  # back on the base
        await pulls.pull(BAD)  # goes through at once: the operator's repo has that commit
        assert pulls.failures("ag1") == 0
        _fifo_tip(paths, BAD)  # and holds the next one again
        held = asyncio.ensure_future(pulls.pull(BAD))
        await asyncio.sleep(0)
        t0 = time.monotonic()
        r = await pulls.pull(GOOD)
        took = time.monotonic() - t0
        with pytest.raises(HiveError):
            await held
        assert r.commit == as_agent(paths, GOOD, "rev-parse", "HEAD")
        assert took < IDLE / 2, f"another agent's pull waited {took:.1f} s behind the held one, on the shared lane"

    try:
        asyncio.run(run())
    finally:
        pulls.close()
