"""Running git for the workspaces (`hyperhive.workspace`): which uid, which
settings, how long, how much output.

Every call names its git dir (``--git-dir``, never discovered), starts from
`config_git`'s settings and environment (no hooks, fsmonitor, replace objects,
system or global config; no transport at all unless a call allows ``file``
for a bundle) and runs as a given uid:

- in an agent's clone, as the agent's own uid: git reads that repo's config,
  which the agent wrote, so the process it runs must hold no privilege the
  agent lacks. The settings here beat the repo's, including the ones that
  would make a bundle cost more than it should (pack threads, window memory);
- in the operator's repository, as the uid that owns it: the files git writes
  there (objects, the ``hive/<name>`` ref and its log) are the operator's, not
  root's, and git's own ownership check (a repo owned by another uid is
  refused) has nothing to refuse.

A daemon that is not root runs everything as itself (it could not switch, and
its agents are its own uid already).
"""

from __future__ import annotations

import math
import os
import resource
import selectors
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import IO

from hyperhive.config_git import GIT_CONFIG, git_env
from hyperhive.errors import BadRequest, Internal

__all__ = ["AGENT_CONFIG", "FETCH_CONFIG", "GitResult", "Runner", "git_argv", "run", "stream_to"]

# On top of GIT_CONFIG in an agent's clone: nothing there may make a bundle dearer than the default.
AGENT_CONFIG: tuple[tuple[str, str], ...] = (
    ("pack.threads", "1"),
    ("pack.window", "10"),
    ("pack.depth", "50"),
    ("pack.windowMemory", "256m"),
    ("core.bigFileThreshold", "512m"),
    ("core.deltaBaseCacheLimit", "96m"),
    ("core.packedGitLimit", "256m"),
    ("core.multiPackIndex", "false"),
)
# On top of GIT_CONFIG for a fetch from a bundle file (the operator's HEAD into a new clone): that
# one transport, nothing else fetched, pruned or run. (A fetch from a bundle does not fsck before
# git 2.45: the pull feeds an agent's pack to ``index-pack --strict`` instead.)
FETCH_CONFIG: tuple[tuple[str, str], ...] = (
    ("protocol.file.allow", "always"),  # a bundle is a file: the only transport ever allowed
    ("transfer.fsckObjects", "true"),
    ("fetch.fsckObjects", "true"),
    ("fetch.recurseSubmodules", "false"),
    ("submodule.recurse", "false"),
    ("fetch.prune", "false"),
    ("fetch.pruneTags", "false"),
    ("fetch.writeCommitGraph", "false"),
    ("fetch.showForcedUpdates", "false"),
)
STDERR_KEEP = 4096  # bytes of a failed call's stderr kept for its error


@dataclass(frozen=True)
class Runner:
    """Who a git process runs as: uid and gid, or None for the daemon itself."""

    uid: int | None = None
    gid: int | None = None

    def kwargs(self) -> dict[str, object]:
        if self.uid is None or os.geteuid() != 0:
            return {}
        return {"user": self.uid, "group": self.gid if self.gid is not None else self.uid, "extra_groups": []}


@dataclass(frozen=True)
class GitResult:
    returncode: int
    stdout: bytes
    stderr: str


def git_argv(git_dir: str, args: Sequence[str], extra: Sequence[tuple[str, str]] = (),
             work_tree: str | None = None) -> list[str]:
    """argv of one git call on ``git_dir`` (pure): GIT_CONFIG, then ``extra``
    (later -c settings win), then the subcommand."""
    argv = ["git", "--no-pager", f"--git-dir={git_dir}"]
    if work_tree is not None:
        argv.append(f"--work-tree={work_tree}")
    for key, value in (*GIT_CONFIG, *extra):
        argv += ["-c", f"{key}={value}"]
    return [*argv, *args]


def _env(more: Mapping[str, str] = {}) -> dict[str, str]:
    return {**git_env(os.environ.get("PATH"), ("hyperhive", "hyperhive@localhost")), **more}


def _limit_as(max_as: int | None) -> Callable[[], None] | None:
    """A child's hook (after fork, before exec) capping its address space, or None."""
    if max_as is None:
        return None

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (max_as, max_as))
    return cap


def run(git_dir: str, *args: str, runner: Runner = Runner(), extra: Sequence[tuple[str, str]] = (),
        work_tree: str | None = None, timeout: float = 60.0, check: bool = True,
        input: bytes | None = None, stdin: IO[bytes] | None = None,
        env: Mapping[str, str] = {}, max_as: int | None = None) -> GitResult:
    """One git call, its output in memory (small outputs only); ``stdin`` an
    open file it reads from where it stands; ``env`` on top of `config_git`'s
    environment (``GIT_ALLOC_LIMIT``…); ``max_as`` bytes of address space at
    most (RLIMIT_AS). Internal on failure when ``check``, BadRequest when it
    takes longer than ``timeout``."""
    argv = git_argv(git_dir, args, extra, work_tree)
    try:
        r = subprocess.run(argv, input=input, capture_output=True, env=_env(env), cwd="/", timeout=timeout,
                           stdin=stdin if stdin is not None else None if input is not None else subprocess.DEVNULL,
                           process_group=0, preexec_fn=_limit_as(max_as),
                           **runner.kwargs())  # type: ignore[call-overload]
    except subprocess.TimeoutExpired:
        raise BadRequest(f"git {args[0]} took longer than {timeout:g} s in {git_dir}") from None
    err = r.stderr[-STDERR_KEEP:].decode(errors="replace").strip()
    if check and r.returncode != 0:
        raise Internal(f"git {' '.join(args[:2])} failed in {git_dir}: {err}")
    return GitResult(r.returncode, r.stdout, err)


def stream_to(out: IO[bytes], git_dir: str, *args: str, runner: Runner = Runner(),
              extra: Sequence[tuple[str, str]] = (), timeout: float = 120.0, max_bytes: int | None = None,
              idle: float | None = None) -> int:
    """Run one git call with its stdout copied into ``out``, at most
    ``max_bytes`` of it, for ``timeout`` seconds at most, and with no more than
    ``idle`` seconds between two reads of its output (a git stuck on a FIFO
    writes nothing: it is not given the whole ``timeout``). Its whole process
    group is killed past any bound. The bytes written; Internal when git
    fails, BadRequest past a bound (its ``carried``: the bytes read from git)."""
    argv = git_argv(git_dir, args, extra)
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=_env(), cwd="/", process_group=0, **runner.kwargs())  # type: ignore[call-overload]
    assert proc.stdout is not None and proc.stderr is not None
    deadline = time.monotonic() + timeout
    quiet_until = math.inf if idle is None else time.monotonic() + idle
    written, err, over = 0, b"", ""
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ, "out")
        sel.register(proc.stderr, selectors.EVENT_READ, "err")
        open_pipes = 2
        while open_pipes and not over:
            now = time.monotonic()
            if now >= deadline:
                over = f"git {args[0]} took longer than {timeout:g} s in {git_dir}"
                break
            if now >= quiet_until:
                over = f"git {args[0]} wrote nothing for {idle:g} s in {git_dir}"
                break
            for key, _ in sel.select(timeout=min(deadline, quiet_until) - now):
                chunk = os.read(key.fd, 1 << 16)
                if not chunk:
                    sel.unregister(key.fileobj)
                    open_pipes -= 1
                elif key.data == "err":
                    err = (err + chunk)[-STDERR_KEEP:]
                else:
                    written += len(chunk)
                    if idle is not None:
                        quiet_until = time.monotonic() + idle
                    if max_bytes is not None and written > max_bytes:
                        over = f"git {args[0]} in {git_dir} gave more than {max_bytes} bytes"
                        break
                    out.write(chunk)
    if over:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    rc = proc.wait()
    proc.stdout.close()
    proc.stderr.close()
    if over:
        refused = BadRequest(over)
        refused.carried = written  # type: ignore[attr-defined]  # what the caller still paid for
        raise refused
    if rc != 0:
        raise Internal(f"git {args[0]} failed in {git_dir}: {err.decode(errors='replace').strip()}")
    out.flush()
    return written
