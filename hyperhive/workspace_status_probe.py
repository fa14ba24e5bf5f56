"""The two questions only git in the clone can answer (is anything uncommitted,
and how many commits are not in the operator's repo), asked inside a sandbox.

``git status`` must read the clone's config, attributes and index, and those
can name commands (filters, an fsmonitor, ``core.*`` programs). Rather than
chase every such setting, the daemon runs git where none of them can hurt:
in a bubblewrap sandbox no bigger than the agent's own, as the clone's owner
(the agent's uid), with no network, no capabilities, a fresh ``/tmp``, the
system dirs read-only and the clone itself bound **read-only** at ``/work``
(nothing of the host's state dir, the operator's repo or the daemon's
sockets is in view). Whatever the clone makes git run, it runs with less
than the agent already has. Git's own steering settings are still switched
off on the command line (hooks, fsmonitor, …) so the answer does not hang on them.

The probe's processes are bounded by the agent's limits (`ProbeCgroups`,
set by the backend with `use_cgroups`): they start through the harness's own
launcher (`sandbox.launch`), which joins a cgroup before anything else runs.
While the agent runs, that is its own cgroup, so whatever the clone makes git
run (a filter that forks or eats memory) counts against what the agent may
use at all, as if the agent had run it. An agent that does not run has no
cgroup: its probe gets one of its own with the agent's limits, in a sibling
namespace, removed (everything in it killed) after. Without cgroups (none
usable on the host) the probe runs as before: sandboxed, timed, capped.

The answer is the agent's to shape (it could lie about its own clone), so
it is parsed strictly, capped (4 MiB of output, 15 s), and used only to keep
work: a lie can block a purge (``--force`` overrides), never widen anything.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import selectors
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import hyperhive.logs as logs
from hyperhive.config_git import GIT_CONFIG
from hyperhive.paths import Limits
from hyperhive.sandbox import view as sv
from hyperhive.sandbox.cgroups import Cgroups
from hyperhive.sandbox.launch import launch_argv

__all__ = ["INSIDE", "ProbeCgroups", "ProbeFailed", "probe_argv", "run_inside", "run_probe", "status_count",
           "unpulled_log", "use_cgroups"]

_log = logs.get("hyperhive.workspace")

INSIDE = "/work"
TIMEOUT = 15.0
OUTPUT_CAP = 4 << 20
_ENV = (("PATH", "/usr/bin:/bin"), ("HOME", "/nonexistent"), ("LC_ALL", "C"), ("GIT_CONFIG_NOSYSTEM", "1"),
        ("GIT_CONFIG_GLOBAL", "/dev/null"), ("GIT_OPTIONAL_LOCKS", "0"), ("GIT_TERMINAL_PROMPT", "0"),
        ("GIT_NO_REPLACE_OBJECTS", "1"))


class ProbeFailed(Exception):
    """The sandboxed git gave no usable answer (the message says why)."""


class ProbeCgroups:
    """Where an agent's probes run: its own cgroup while it has one (it runs),
    else a cgroup of the probe's own with the agent's limits (``limits_of``),
    in ``spare`` (a sibling namespace), removed after the probe."""

    def __init__(self, cgroups: Cgroups, limits_of: Callable[[str], Limits], spare: Cgroups | None) -> None:
        self.cgroups = cgroups
        self.limits_of = limits_of
        self.spare = spare
        self._ids = itertools.count(1)  # a cgroup per probe: probes of one agent at once never share one
        self._lock = threading.Lock()
        self._active = 0  # probes in a spare cgroup now: the spare namespace exists only while some run

    @classmethod
    def of(cls, cgroups: Cgroups, limits_of: Callable[[str], Limits]) -> ProbeCgroups:
        """The agents' ``cgroups`` and a spare namespace beside theirs (``<namespace>-probe``)."""
        spare = Cgroups.detect(cgroups.namespace + "-probe")
        if spare is not None:
            spare.discard_namespace()  # made again by the first probe that needs it
        return cls(cgroups, limits_of, spare)

    @contextlib.contextmanager
    def joined(self, agent: str) -> Iterator[tuple[Path, ...]]:
        """The cgroup.procs files a probe of ``agent`` joins, for the probe's length."""
        try:
            own = self.cgroups.agent(agent)
        except ValueError:
            raise ProbeFailed(f"no cgroup can be named for {agent!r}") from None
        if all(d.is_dir() for d in own.dirs.values()):
            yield own.procs_files  # it runs: the probe counts against its own limits
            return
        spare = self.spare
        if spare is None:
            raise ProbeFailed("no cgroup to bound the look inside the clone with")
        with self._lock:
            self._active += 1
        try:
            try:
                cg = spare.prepare(f"{agent}-{next(self._ids)}", self.limits_of(agent))
            except (OSError, ValueError, RuntimeError) as exc:
                _log.warning("workspace.probe_no_cgroup", agent=agent, error=str(exc))
                raise ProbeFailed(f"no cgroup for the look inside the clone: {exc}") from None
            try:
                yield cg.procs_files
            finally:
                spare.forget(cg.agent)  # kills what is left in it, then removes it
        finally:
            with self._lock:
                self._active -= 1
                if self._active == 0:  # no probe cgroup left behind the daemon, nor its namespace
                    spare.discard_namespace()

    def close(self) -> None:
        """Remove the spare namespace, should a probe have left it (a probe's end removes it already)."""
        if self.spare is not None:
            self.spare.discard_namespace()


_cgroups: ProbeCgroups | None = None


def use_cgroups(cgroups: ProbeCgroups | None) -> None:
    """The backend's: bound every probe from now on by its agent's cgroup (None: no more)."""
    global _cgroups
    _cgroups = cgroups


def git_inside(args: Sequence[str]) -> list[str]:
    """git in the sandbox's /work, its steering settings off (the command line wins)."""
    argv = ["git", "--no-pager", "--no-optional-locks", f"--git-dir={INSIDE}/.git", f"--work-tree={INSIDE}",
            "-c", "safe.directory=*"]
    for key, value in GIT_CONFIG:
        argv += ["-c", f"{key}={value}"]
    return [*argv, *args]


def probe_argv(work: str, inner: Sequence[str], system: Sequence[tuple[str, str]] | None = None,
               etc: Sequence[str] | None = None) -> list[str]:
    """The bubblewrap command line around ``inner`` with ``work`` read-only at /work (pure but for
    the host's system dirs, looked up when not given)."""
    argv = ["bwrap"]
    for kind, path in (sv.host_system_entries() if system is None else system):
        argv += ["--symlink", kind[len("link:"):], path] if kind.startswith("link:") else ["--ro-bind", path, path]
    argv += ["--dir", "/etc"]
    for n in (sv.host_etc_entries(("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "nsswitch.conf")) if etc is None
              else etc):
        argv += ["--ro-bind", f"/etc/{n}", f"/etc/{n}"]
    argv += ["--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp",
             "--ro-bind", work, INSIDE, "--remount-ro", "/",
             "--unshare-all", "--unshare-user", "--uid", str(sv.AGENT_UID), "--gid", str(sv.AGENT_GID),
             "--disable-userns", "--hostname", "probe", "--cap-drop", "ALL", "--die-with-parent",
             "--new-session", "--chdir", INSIDE, "--clearenv"]
    for k, v in _ENV:
        argv += ["--setenv", k, v]
    return [*argv, "--", *inner]


def _owner(work: Path) -> tuple[int, int] | None:
    """The uid and gid to run as: the clone's owner, when the daemon is root and
    that is not root (an agent with its own uid); else None (as ourselves)."""
    st = os.lstat(work)
    return (st.st_uid, st.st_gid) if os.geteuid() == 0 and st.st_uid != 0 else None


def run_probe(work: Path, args: Sequence[str], stdin: bytes = b"", deadline: float | None = None) -> bytes:
    """stdout of ``git args`` run in the clone at ``work`` (``agents/<name>/work``),
    sandboxed, in the agent's cgroup when there are cgroups, for ``TIMEOUT``
    seconds at most (less when ``deadline``, a `time.monotonic` value, comes
    first); ProbeFailed on a non-zero exit, a timeout, too much output, or no sandbox."""
    return run_inside(work, git_inside(args), f"git {args[0]} in the clone", stdin, deadline)


def run_inside(work: Path, inner: Sequence[str], what: str, stdin: bytes = b"", deadline: float | None = None,
               system: Sequence[tuple[str, str]] | None = None) -> bytes:
    """stdout of ``inner`` run as ``run_probe`` runs git: ``work`` read-only at /work, as
    its owner, in its agent's cgroup (``work.parent.name``), timed and capped. ``system``:
    the dirs bound read-only (None: the host's system dirs)."""
    if shutil.which("bwrap") is None:
        raise ProbeFailed(f"no bubblewrap on this host to run {what} in")
    limit = TIMEOUT if deadline is None else min(TIMEOUT, deadline - time.monotonic())
    if limit <= 0:
        raise ProbeFailed(f"no time was left to run {what}")
    argv = probe_argv(str(work), inner, system)
    bound = _cgroups
    if bound is None:
        return _run(work, argv, what, stdin, (), limit)
    with bound.joined(work.parent.name) as procs:
        return _run(work, argv, what, stdin, procs, limit)


def _run(work: Path, argv: list[str], what: str, stdin: bytes, procs: Sequence[Path], limit: float) -> bytes:
    ids = _owner(work)
    if ids is not None or procs:
        argv = launch_argv(sys.executable, procs, None if ids is None else ids[0], None if ids is None else ids[1],
                           argv)
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            cwd="/", env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
                            start_new_session=True, close_fds=True)
    try:
        out = _collect(proc, stdin, limit, what)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        proc.wait()
    if proc.returncode != 0:
        raise ProbeFailed(f"{what} failed (exit {proc.returncode})")
    return out


def _collect(proc: subprocess.Popen[bytes], stdin: bytes, limit: float, what: str) -> bytes:
    assert proc.stdin is not None and proc.stdout is not None
    try:
        proc.stdin.write(stdin)  # a few KiB at most: fits the pipe
        proc.stdin.close()
    except BrokenPipeError:
        pass
    deadline = time.monotonic() + limit
    chunks: list[bytes] = []
    size = 0
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ProbeFailed(f"{what} took more than {limit:.0f} s")
            if not sel.select(left):
                continue
            chunk = os.read(proc.stdout.fileno(), 1 << 16)
            if not chunk:
                break
            size += len(chunk)
            if size > OUTPUT_CAP:
                raise ProbeFailed(f"{what} said too much")
            chunks.append(chunk)
    left = max(0.1, deadline - time.monotonic())
    try:
        proc.wait(left)
    except subprocess.TimeoutExpired:
        raise ProbeFailed(f"{what} took more than {limit:.0f} s") from None
    return b"".join(chunks)


def status_count(work: Path, deadline: float | None = None) -> int:
    """How many paths ``git status`` lists (changed, staged, untracked; ignored ones not).
    ``deadline`` (`time.monotonic`): the probe ends by then at the latest."""
    out = run_probe(work, ["status", "--porcelain=v1", "-z", "--no-renames", "--untracked-files=all",
                           "--ignore-submodules=none"], deadline=deadline)
    return sum(1 for entry in out.split(b"\0") if len(entry) > 3)


def unpulled_log(work: Path, tips: Sequence[str], known: Sequence[str], limit: int = 20,
                 deadline: float | None = None) -> tuple[int, list[str]]:
    """(how many commits reachable from ``tips`` are not reachable from ``known``,
    the first ``limit`` of them as raw ``id NUL subject`` lines), by the clone's git;
    ids git does not have are skipped (``--ignore-missing``). Both probes end by
    ``deadline`` (`time.monotonic`) at the latest."""
    feed = "".join(f"{t}\n" for t in tips) + "".join(f"^{k}\n" for k in known)
    count = run_probe(work, ["rev-list", "--count", "--ignore-missing", "--stdin"], feed.encode(), deadline)
    try:
        n = int(count.strip() or b"-1")
    except ValueError:
        raise ProbeFailed("git rev-list in the clone gave no count") from None
    if n < 0:
        raise ProbeFailed("git rev-list in the clone gave no count")
    log = run_probe(work, ["rev-list", "--ignore-missing", "--stdin", f"--max-count={limit}",
                           "--format=%H%x00%s", "--no-commit-header"], feed.encode(), deadline)
    return n, log.decode("utf-8", errors="replace").splitlines()
