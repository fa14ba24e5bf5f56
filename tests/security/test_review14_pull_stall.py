"""Review of issue 14 (hostile agent): a FIFO in the clone holds a pull for
PULL_TIMEOUT (300 s).

The agent's git reads ``.git/refs/heads/hive/<name>`` (or ``.git/config``);
a FIFO there blocks its ``open`` until the 300 s timeout of every git call of
the pull. ``Pulls`` has WORKERS=2 threads for the whole host: two agents (or
one that also calls ``turn_done`` as the other…: one pull at a time per agent)
stall every agent's pull, and ``hive pull`` waits behind them for minutes.

Proposed fix (hyperhive/workspace_pull.py ``agent_runner``/``pull``, ~line
95/130): read the branch tip link-proof first with
`workspace_status_refs.read_clone_refs` (O_NONBLOCK, regular files only) and
refuse a clone whose ``config``/``HEAD``/refs are not regular files; give
each agent-side git call a short timeout (a few seconds for rev-parse); and
give each agent its own worker slot fairness (a per-agent deadline on the
shared pool, or one worker per busy agent up to a cap).
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
from test_workspace import UIDS, account, make_op, make_paths, owner

from hyperhive.errors import Conflict, HiveError
from hyperhive.names import AgentName
from hyperhive.workspace import create_workspace
from hyperhive.workspace_pull import pull

A = AgentName("ag1")


# e2e: through real git (clone, bundle, index-pack), an external tool, as setup.cfg's e2e marker says
pytestmark = pytest.mark.e2e


def test_a_fifo_ref_does_not_hold_a_pull_for_minutes(tmp_path: Path) -> None:
    op, paths = make_op(tmp_path), make_paths(tmp_path)
    create_workspace(paths, A, str(op), owner("ag1"))
    ref = paths.workspace(A) / ".git" / "refs" / "heads" / "hive" / "ag1"
    ref.parent.mkdir(parents=True, exist_ok=True)
    if ref.exists():
        ref.unlink()
    os.mkfifo(ref, 0o666)
    if os.geteuid() == 0:
        os.chown(ref, UIDS["ag1"], UIDS["ag1"])
    out: list[object] = []

    def run() -> None:
        try:
            out.append(pull(paths, A, account("ag1")))
        except HiveError as exc:
            out.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t0 = time.monotonic()
    t.start()
    t.join(20)
    took = time.monotonic() - t0
    stuck = t.is_alive()
    while t.is_alive():  # let the blocked git go: open the FIFO's other end and close it
        _open_writer_once(ref)
        t.join(0.5)
    assert not stuck, f"a pull was still blocked on the agent's FIFO after {took:.0f} s (of PULL_TIMEOUT 300 s)"


def _open_writer_once(fifo: Path) -> None:
    """Open and close the FIFO's write end (ENXIO while nobody reads): the reader sees EOF."""
    try:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:
        pass


@pytest.mark.parametrize("planted", ["config", "HEAD", "packed-refs"])
def test_a_fifo_git_would_open_first_refuses_the_pull_at_once(tmp_path: Path, planted: str) -> None:
    op, paths = make_op(tmp_path), make_paths(tmp_path)
    create_workspace(paths, A, str(op), owner("ag1"))
    f = paths.workspace(A) / ".git" / planted
    f.unlink(missing_ok=True)
    os.mkfifo(f, 0o666)
    if os.geteuid() == 0:
        os.chown(f, UIDS["ag1"], UIDS["ag1"])
    t0 = time.monotonic()
    with pytest.raises(Conflict, match="workspace is refused"):
        pull(paths, A, account("ag1"))
    assert time.monotonic() - t0 < 10
