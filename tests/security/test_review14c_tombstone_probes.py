"""Third review of issue 14 (hostile agent, destroyed): its tombstone's clone
stalls the dashboard's every page load.

The dashboard's ``/api/state`` (and each push that rebuilds the kept state)
runs `tombstones.list_tombstones(…, workspaces=True)`, which asks
`workspace_status.cached_status` of every tombstone's clone with no deadline:
each probe gets its full 15 s (`workspace_status_probe.TIMEOUT`). A clone
whose ``.git/config`` names a clean filter that sleeps (the agent's to write
while it ran; it runs, sandboxed, on the stat-dirty file) makes each look take
15 s or more; the cache keeps a tombstone's status 30 s, so every other page
load waits that long. Review 14 bounded the live agents' round
(`observe_workspaces`, a 2 s budget); the tombstones' went around it.

Fixed (hyperhive/tombstones.py ``list_tombstones``): the tombstones' clones go
through ``observe_workspaces`` too (the same budget, stalest first; one not
reached in time is shown without its workspace until a later round, and a
purge always checks afresh).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from workspace_status_repos import git, make_layout

from hyperhive.tombstones import list_tombstones

pytestmark = pytest.mark.e2e  # a real sandbox (the probe's bwrap)


def test_a_slow_tombstone_clone_does_not_stall_the_listing(tmp_path: Path) -> None:
    lay = make_layout(tmp_path)
    git(lay.work, "config", "filter.slow.clean", "sh -c 'sleep 20; cat'")
    (lay.work / ".gitattributes").write_text("* filter=slow\n")
    (lay.work / "README").write_text("HELLO\n")  # stat-dirty: status runs the filter on it
    t0 = time.monotonic()
    [t] = list_tombstones(lay.paths, set(), time.time(), workspaces=True)
    took = time.monotonic() - t0
    assert t.name == lay.name
    assert took < 6.0, f"one tombstone's clone held the kept-state listing (the dashboard's page) {took:.1f} s"
