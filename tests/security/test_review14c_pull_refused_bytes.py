"""Third review of issue 14 (hostile agent): a pull that is refused at the end
costs the operator's disk its whole bundle, and is never counted.

`Pulls` bounds the bytes an agent brings over in an hour (``hourly_bytes``,
4 GiB), but counts a pull only once it went through. The agent's branch file
may name a *tree* (it writes ``.git/refs/heads/hive/<n>`` itself; git's own
``update-ref`` would refuse, the daemon's link-proof read does not care): the
pull streams the bundle (up to MAX_BUNDLE_BYTES, 1 GiB) into a temp file,
``index-pack --strict`` writes it into the operator's quarantine, the
connectivity check walks it, and only then is it refused ("does not point at
a commit"). Nothing is kept, nothing is counted: a gigabyte of the operator's
disk written and read per pull, again after each back-off (and the back-off
resets on any pull that goes through: the agent puts its branch back on a
commit the operator has, once).

Fixed (hyperhive/workspace_pull.py ``_carry``, hyperhive/workspace_pulls.py
``_account_for``): a refused pull's exception says how many bytes it carried
(`workspace_pull.carried_by`), and they count against the agent's hour.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from test_workspace import UIDS, account, as_agent, make_op, make_paths, owner

from hyperhive.errors import Conflict, HiveError
from hyperhive.names import AgentName
from hyperhive.workspace import create_workspace
from hyperhive.workspace_pulls import Pulls

AG = AgentName("ag1")


# e2e: through real git (clone, bundle, index-pack), an external tool, as setup.cfg's e2e marker says
pytestmark = pytest.mark.e2e


def test_refused_pulls_count_against_the_hour(tmp_path: Path) -> None:
    op, paths = make_op(tmp_path), make_paths(tmp_path)
    create_workspace(paths, AG, str(op), owner("ag1"))
    work = paths.workspace(AG)
    (work / "big.bin").write_bytes(os.urandom(20_000))
    if os.geteuid() == 0:
        os.chown(work / "big.bin", UIDS["ag1"], UIDS["ag1"])
    as_agent(paths, "ag1", "add", "big.bin")
    tree = as_agent(paths, "ag1", "write-tree")
    ref = work / ".git" / "refs" / "heads" / "hive" / "ag1"
    ref.write_text(tree + "\n")  # what the agent writes into its own clone: its branch names a tree
    if os.geteuid() == 0:
        os.chown(ref, UIDS["ag1"], UIDS["ag1"])
    pulls = Pulls(paths, lambda n: account(n), hourly_bytes=60_000)

    async def run() -> list[str]:
        seen = []
        for _ in range(6):
            with pytest.raises(HiveError) as exc:
                await pulls.pull(AG)
            seen.append(str(exc.value))
            if isinstance(exc.value, Conflict) and "in the last hour" in str(exc.value):
                break
        return seen

    try:
        seen = asyncio.run(run())
    finally:
        pulls.close()
    assert "does not point at a commit" in seen[0]
    assert "in the last hour" in seen[-1], (
        f"{len(seen)} refused pulls of ~20 KB each and the 60 KB hour still has room: {seen}")
    assert not any(p.name.startswith("tmp_objdir") for p in (op / ".git" / "objects").iterdir())
