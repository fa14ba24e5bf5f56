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

The answer is the agent's to shape (it could lie about its own clone), so
it is parsed strictly, capped (4 MiB of output, 15 s), and used only to keep
work: a lie can block a purge (``--force`` overrides), never widen anything.
"""

from __future__ import annotations

import os
import selectors
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from hyperhive.config_git import GIT_CONFIG
from hyperhive.sandbox import view as sv
from hyperhive.sandbox.launch import launch_argv

__all__ = ["INSIDE", "ProbeFailed", "probe_argv", "run_probe", "status_count", "unpulled_log"]

INSIDE = "/work"
TIMEOUT = 15.0
OUTPUT_CAP = 4 << 20
_ENV = (("PATH", "/usr/bin:/bin"), ("HOME", "/nonexistent"), ("LC_ALL", "C"), ("GIT_CONFIG_NOSYSTEM", "1"),
        ("GIT_CONFIG_GLOBAL", "/dev/null"), ("GIT_OPTIONAL_LOCKS", "0"), ("GIT_TERMINAL_PROMPT", "0"),
        ("GIT_NO_REPLACE_OBJECTS", "1"))


class ProbeFailed(Exception):
    """The sandboxed git gave no usable answer (the message says why)."""


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


def run_probe(work: Path, args: Sequence[str], stdin: bytes = b"") -> bytes:
    """stdout of ``git args`` run in the clone at ``work``, sandboxed; ProbeFailed
    on a non-zero exit, a timeout, too much output, or no sandbox."""
    if shutil.which("bwrap") is None:
        raise ProbeFailed("no bubblewrap on this host to look inside the clone with")
    argv = probe_argv(str(work), git_inside(args))
    ids = _owner(work)
    if ids is not None:
        argv = launch_argv(sys.executable, (), ids[0], ids[1], argv)
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            cwd="/", env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
                            start_new_session=True, close_fds=True)
    try:
        out = _collect(proc, stdin)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        proc.wait()
    if proc.returncode != 0:
        raise ProbeFailed(f"git {args[0]} in the clone failed (exit {proc.returncode})")
    return out


def _collect(proc: subprocess.Popen[bytes], stdin: bytes) -> bytes:
    assert proc.stdin is not None and proc.stdout is not None
    try:
        proc.stdin.write(stdin)  # a few KiB at most: fits the pipe
        proc.stdin.close()
    except BrokenPipeError:
        pass
    deadline = time.monotonic() + TIMEOUT
    chunks: list[bytes] = []
    size = 0
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ProbeFailed(f"git in the clone took more than {TIMEOUT:.0f} s")
            if not sel.select(left):
                continue
            chunk = os.read(proc.stdout.fileno(), 1 << 16)
            if not chunk:
                break
            size += len(chunk)
            if size > OUTPUT_CAP:
                raise ProbeFailed("git in the clone said too much")
            chunks.append(chunk)
    left = max(0.1, deadline - time.monotonic())
    try:
        proc.wait(left)
    except subprocess.TimeoutExpired:
        raise ProbeFailed(f"git in the clone took more than {TIMEOUT:.0f} s") from None
    return b"".join(chunks)


def status_count(work: Path) -> int:
    """How many paths ``git status`` lists (changed, staged, untracked; ignored ones not)."""
    out = run_probe(work, ["status", "--porcelain=v1", "-z", "--no-renames", "--untracked-files=all",
                           "--ignore-submodules=none"])
    return sum(1 for entry in out.split(b"\0") if len(entry) > 3)


def unpulled_log(work: Path, tips: Sequence[str], known: Sequence[str], limit: int = 20) -> tuple[int, list[str]]:
    """(how many commits reachable from ``tips`` are not reachable from ``known``,
    the first ``limit`` of them as raw ``id NUL subject`` lines), by the clone's git;
    ids git does not have are skipped (``--ignore-missing``)."""
    feed = "".join(f"{t}\n" for t in tips) + "".join(f"^{k}\n" for k in known)
    count = run_probe(work, ["rev-list", "--count", "--ignore-missing", "--stdin"], feed.encode())
    try:
        n = int(count.strip() or b"-1")
    except ValueError:
        raise ProbeFailed("git rev-list in the clone gave no count") from None
    if n < 0:
        raise ProbeFailed("git rev-list in the clone gave no count")
    log = run_probe(work, ["rev-list", "--ignore-missing", "--stdin", f"--max-count={limit}",
                           "--format=%H%x00%s", "--no-commit-header"], feed.encode())
    return n, log.decode("utf-8", errors="replace").splitlines()
