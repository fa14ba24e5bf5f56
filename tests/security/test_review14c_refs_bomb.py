"""Third review of issue 14 (hostile agent): its clone's refs dir holds a
million entries, and every look at its workspace reads them all.

`workspace_status_refs.read_clone_refs` walks ``.git/refs/heads`` with
``os.listdir`` (every name in memory, sorted) and an ``lstat`` per entry;
``*.lock`` files and directories are skipped without counting, so MAX_REFS
(200 branches) never stops it. A million empty ``x.lock`` files (the agent's
to make, a minute of its time) cost each read ~3 s here, ten million ~30 s;
the read has no deadline:

- ``Coordinator.purge_tombstone`` and ``destroy --purge`` run the work check
  (`tombstones.check_work` → `work_status`) on the Coordinator's own thread:
  every spawn, lifecycle verb and ``ls`` waits behind it;
- ``hive ls`` and the dashboard's rounds (`observe_workspaces`, "2 s of budget")
  read it afresh every 5 s: the budget is checked only between clones.

Fixed (hyperhive/workspace_status_refs.py ``_Reader.walk``): the walk reads
directory entries lazily (``os.scandir``) and gives up past ``MAX_ENTRIES``
(1000) with RefsUnreadable: the clone's state is unknown (a purge keeps it
unless forced) and costs a thousand entries, not a million.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_workspace import UIDS, make_op, make_paths, owner

from hyperhive.names import AgentName
from hyperhive.workspace import create_workspace
from hyperhive.workspace_status import lost_work, work_status
from hyperhive.workspace_status_refs import MAX_ENTRIES, read_branch_tip

AG = AgentName("ag1")
PLANTED = 20_000


# e2e: through real git (clone, bundle, index-pack), an external tool, as setup.cfg's e2e marker says
pytestmark = pytest.mark.e2e


def _plant(work: Path, n: int) -> None:
    """What the agent does in its clone: ``n`` empty ``*.lock`` files in a refs dir of its own."""
    code = ("import os, sys\nd = os.path.join(sys.argv[1], '.git/refs/heads/zz')\nos.makedirs(d)\n"
            "fd = os.open(d, os.O_RDONLY)\n"
            "for i in range(int(sys.argv[2])):\n"
            "    os.close(os.open(f'{i}.lock', os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd))\n")
    ids = {"user": UIDS["ag1"], "group": UIDS["ag1"], "extra_groups": []} if os.geteuid() == 0 else {}
    subprocess.run([sys.executable, "-c", code, str(work), str(n)], check=True, timeout=300, **ids)


def test_a_planted_refs_dir_is_not_read_whole(tmp_path: Path) -> None:
    op, paths = make_op(tmp_path), make_paths(tmp_path)
    create_workspace(paths, AG, str(op), owner("ag1"))
    work = paths.workspace(AG)
    _plant(work, PLANTED)
    t0 = time.monotonic()
    st = work_status(paths, AG)
    took = time.monotonic() - t0
    # Unknown (not "nothing to lose"), and for a bounded look: a thousand entries, not all of them.
    assert st.unknown and lost_work(st) is not None, st
    assert "entries" in (st.reason or ""), (
        f"the status read all {PLANTED} planted entries ({took:.2f} s); a million cost ~3 s each time")
    assert PLANTED > 10 * MAX_ENTRIES
    # The pull reads one ref, not the walk: the agent's branch still comes over.
    assert read_branch_tip(work, "refs/heads/hive/ag1") is not None
