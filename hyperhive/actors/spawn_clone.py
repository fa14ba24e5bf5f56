"""A spawn's files, made on a thread of their own (issue 14): the checks that
may refuse it, the agent's dirs, its config repo and its workspace, a clone of
the operator's repository that may take minutes (`workspace.CLONE_TIMEOUT`).

The Coordinator reserves the name on its own thread (a second spawn of it is
refused while this runs; every other verb sees no such agent) and hands the
`Spawning` here; `start` runs `make_files` on a daemon thread and tells the
Coordinator the outcome (``hand_back``), which registers the container, or
tells the caller why not. A spawn that fails leaves nothing of a fresh agent
behind (`discard`); a revived one keeps its tombstone as it was.

A Coordinator that stops first `abandon`s the spawn: its caller hears so at
once, and whatever the fresh agent had made is removed, by the worker when
its clone ends (or at once when it already has). The worker is a daemon
thread: a daemon process that exits before the clone ends does not wait for
it, and leaves the half-made agent as a tombstone (no container row) for
``hive purge NAME`` (with ``--force`` once the clone had fetched commits: with
no workspace record yet, they count as work). Its git, in a process group of
its own, runs on to its end (a fetch from a local bundle).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import hyperhive.logs as logs
from hyperhive import config_repo, tombstones, workspace
from hyperhive.actors.bridge import Reply, fail
from hyperhive.actors.coordinator_core import config_is_fresh
from hyperhive.backends.base import Backend
from hyperhive.errors import Unavailable, UnknownAgent
from hyperhive.names import AgentName
from hyperhive.paths import AgentConfig, StatePaths

__all__ = ["Spawning", "abandon", "discard", "make_files", "start"]

_log = logs.get("hyperhive.spawn")


@dataclass(eq=False)
class Spawning:
    """One spawn from its reservation on the Coordinator's thread to its finish there."""

    agent: AgentName
    config: AgentConfig | None = None
    prompt: str | None = None
    kick: str | None = None
    reply: Reply[dict[str, Any]] | None = None
    fresh: bool = False  # a new agent, not a revived one (known once make_files has looked)
    made: bool = False  # its dirs were begun: a fresh agent's are removed if it does not finish
    handed: bool = False  # the worker has told the Coordinator (under lock)
    abandoned: bool = False  # the Coordinator stopped first (under lock)
    lock: threading.Lock = field(default_factory=threading.Lock)


def make_files(paths: StatePaths, backend: Backend[Any], job: Spawning) -> None:
    """Everything a spawn makes on disk. A bad repo, or an unmerged
    ``hive/<name>`` there, is refused before anything is made; a fresh agent
    whose files fail half-way is removed again (`discard`)."""
    agent, config = job.agent, job.config or AgentConfig()
    job.fresh = config_is_fresh(paths.applied(agent).exists())
    if config.repo is not None and workspace.read_workspace(paths, agent) is None:
        workspace.check_branch_free(workspace.check_repo(paths, config.repo), agent)
    job.made = True
    try:
        paths.create_agent(agent, config)
        head = config_repo.init_repo(paths.config_dir(agent), agent, job.prompt)
        if job.fresh:  # a revived agent keeps the config it last ran with
            config_repo.materialize(paths.config_dir(agent), head, paths.applied(agent))
        # Its workspace, before it ever runs: a clone of the repo on hive/<name>, else an
        # empty repo; a revived agent's is kept.
        account = backend.account(agent)
        owner = (account.uid, account.gid) if account is not None and account.switch else None
        workspace.create_workspace(paths, agent, config.repo, owner)
    except BaseException:
        discard(paths, job)
        raise


def discard(paths: StatePaths, job: Spawning) -> None:
    """Remove what an unfinished spawn of a fresh agent made (nothing of its
    own can be lost: it never ran). Never raises: the spawn's own error is
    the one its caller hears."""
    if not (job.fresh and job.made):
        return
    try:
        tombstones.purge(paths, job.agent, (), force=True)
        _log.info("spawn.discarded", agent=job.agent)
    except UnknownAgent:
        pass  # nothing was made yet
    except Exception:  # noqa: BLE001 - logged; the spawn's error is the caller's
        _log.exception("spawn.discard_failed", agent=job.agent)


def start(paths: StatePaths, backend: Backend[Any], job: Spawning,
          hand_back: Callable[[Exception | None], None]) -> threading.Thread:
    """Run `make_files` on a daemon thread, then ``hand_back(error)`` (a tell
    to the Coordinator) unless the spawn was abandoned meanwhile."""

    def work() -> None:
        logs.bind_thread(actor="spawn", agent=job.agent)
        error: Exception | None = None
        try:
            make_files(paths, backend, job)
        except Exception as exc:  # noqa: BLE001 - the caller hears of it
            error = exc
        with job.lock:
            abandoned = job.abandoned
            job.handed = not abandoned
        if not abandoned:
            hand_back(error)
            return
        if error is None:
            discard(paths, job)
        _log.info("spawn.abandoned", agent=job.agent, error=None if error is None else str(error))

    t = threading.Thread(target=work, name=f"spawn-{job.agent}", daemon=True)
    t.start()
    return t


def abandon(paths: StatePaths, job: Spawning) -> None:
    """The Coordinator stops with ``job`` unfinished: its caller is told, and a
    fresh agent's files are removed now if the worker is done (its finish would
    never run), else by the worker when it is."""
    with job.lock:
        job.abandoned = True
        over = job.handed
    if over:
        discard(paths, job)
    fail(job.reply, Unavailable(f"the daemon stopped before {job.agent} was spawned"))
