"""Second review of issue 14 (hostile agent): the pull's link-proof tip read
checks only the files git opens *first* (``config``, ``HEAD``, the ref,
``packed-refs``); git still runs as the agent in its clone for ``bundle
create``, and opens more of the agent's files, any of which can be a FIFO with
no race at all:

- ``include.path`` in a regular ``.git/config`` naming a FIFO (git opens every
  include: ``config`` itself passes the check);
- ``.git/shallow`` (read by every rev walk: ``is_repository_shallow``);
- ``.git/info/grafts`` (still read when present).

Each holds the agent-side ``git bundle create`` for the pull's whole
``timeout`` (PULL_TIMEOUT, 300 s): ``Pulls`` has WORKERS=2 threads host-wide,
so two such agents stall every other agent's pull (and ``hive pull``) for as
long as they keep committing. Only a pull with a *new* commit runs git in the
clone, so each test commits first.

Proposed fix (hyperhive/workspace_pull.py ``_carry``, the ``wg.stream_to`` of
``bundle create``): git has no "open non-blocking" switch, so bound the
agent-side git, not the files: (1) give the bundle a short *idle* deadline
(no byte on the pipe for a few seconds → kill, refuse the pull), separately
from the 300 s total; and/or (2) run it with ``GIT_CONFIG_NOSYSTEM``-style
overrides that stop what can be steered: ``-c include.path=`` does not unset
includes, so read the clone's config with `config_git`'s parser and refuse a
config with ``[include]``/``[includeIf]``, and refuse a ``shallow`` or
``info/grafts`` that is not absent or a regular file (the same
`_check_regular` as ``config``); (3) do not let one agent hold a shared pull
worker for more than a few seconds of idleness (per-agent fairness).
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
from test_workspace import ROOT, UIDS, account, as_agent, make_op, make_paths, owner

from hyperhive.errors import HiveError
from hyperhive.names import AgentName
from hyperhive.workspace import create_workspace
from hyperhive.workspace_pull import pull

A = AgentName("ag1")
BOUND = 10.0  # seconds a refused (or finished) pull may take; PULL_TIMEOUT is 300


# e2e: through real git (clone, bundle, index-pack), an external tool, as setup.cfg's e2e marker says
pytestmark = pytest.mark.e2e


def _chown(p: Path) -> None:
    if ROOT:
        os.chown(p, UIDS["ag1"], UIDS["ag1"])


def _open_writer_once(fifo: Path) -> None:
    try:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:
        pass


def _plant(work: Path, where: str) -> Path:
    git = work / ".git"
    if where == "include":
        fifo = work.parent / "inc.fifo"  # anywhere the agent's uid can open
        os.mkfifo(fifo, 0o666)
        _chown(fifo)
        with open(git / "config", "a") as f:
            f.write(f"[include]\n\tpath = {fifo}\n")
        return fifo
    fifo = git / ("shallow" if where == "shallow" else "info/grafts")
    fifo.parent.mkdir(exist_ok=True)
    _chown(fifo.parent)
    os.mkfifo(fifo, 0o666)
    _chown(fifo)
    return fifo


@pytest.mark.parametrize("where", ["include", "shallow", "grafts"])
def test_a_fifo_git_opens_later_does_not_hold_a_pull(tmp_path: Path, where: str) -> None:
    op, paths = make_op(tmp_path), make_paths(tmp_path)
    create_workspace(paths, A, str(op), owner("ag1"))
    work = paths.workspace(A)
    (work / "f.txt").write_text("new\n")
    _chown(work / "f.txt")
    as_agent(paths, "ag1", "add", "f.txt")
    as_agent(paths, "ag1", "commit", "-qm", "agent: new commit (so the pull runs bundle create)")
    fifo = _plant(work, where)
    out: list[object] = []

    def run() -> None:
        try:
            out.append(pull(paths, A, account("ag1"), timeout=120))
        except HiveError as exc:
            out.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t0 = time.monotonic()
    t.start()
    t.join(BOUND)
    stuck = t.is_alive()
    while t.is_alive():  # release the blocked git: open the FIFO's other end and close it
        _open_writer_once(fifo)
        t.join(0.5)
    assert not stuck, (f"a pull was still blocked on the agent's FIFO ({where}) after "
                       f"{time.monotonic() - t0:.0f} s: it holds one of the host's 2 pull workers")
