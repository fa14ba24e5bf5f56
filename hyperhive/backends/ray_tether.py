"""Ties a harness to the Ray actor that started it (issue 18).

On the local backend a harness outlives its daemon on purpose (issue 16). On
the ray backend the container is the Ray actor: when the actor's process dies
(its node was removed, its raylet killed, the actor killed), Ray restarts the
actor elsewhere and a harness left behind would still eat the agent's
messages. Nothing in the harness's tree dies with the actor by itself (it is
in a session of its own, reparented to init), so the actor starts this
tether beside each harness:

    python -I -m hyperhive.backends.ray_tether PGID [CGROUP_PROCS ...]

Its stdin is a pipe whose only write end the actor holds. The tether forks
once more (not a child of the Ray worker: nothing that ends the worker's
children ends it too) and reads the pipe. A line ``done`` then end of file:
the harness ended or was stopped normally, nothing to do. End of file without
it: the actor is gone; the harness's process group is SIGKILLed, then every
process still listed in the agent's ``cgroup.procs`` files, until they are
empty (bounded). Standard library only.

The relay's sockets (`ray_link`, node-local) are tethered the same way, once
per actor:

    python -I -m hyperhive.backends.ray_tether --run-dir DIR DEV:INO:CTIME_NS ...

End of file without ``done``: each socket in DIR that is still the one the
dead actor bound is removed, then DIR if nothing else is in it. A socket a
restarted actor bound there meanwhile stays: the inode number alone could be
the same (a freed inode is reused at once), its change time is not.
"""

from __future__ import annotations

import os
import signal
import stat
import sys
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = ["DONE", "clear_run_dir", "cut", "identity", "main"]

DONE = b"done\n"
_ROUNDS = 50  # x 0.1 s: how long the cgroup is emptied for


def _pids(procs: Path) -> list[int]:
    try:
        return [int(p) for p in procs.read_text().split()]
    except (OSError, ValueError):
        return []


def cut(pgid: int, procs_files: Sequence[Path]) -> bool:
    """SIGKILL the group, then what is left in the cgroup(s); True when nothing is left."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    for _ in range(_ROUNDS):
        left = [pid for procs in procs_files for pid in _pids(procs)]
        if not left:
            return True
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(0.1)
    return False


Identity = tuple[int, int, int]  # a socket's (st_dev, st_ino, st_ctime_ns)


def identity(st: os.stat_result) -> str:
    """How the relay names a socket it bound to its tether."""
    return f"{st.st_dev}:{st.st_ino}:{st.st_ctime_ns}"


def clear_run_dir(run_dir: Path, bound: Sequence[Identity]) -> None:
    """Remove the sockets in ``run_dir`` that are ``bound`` (`identity`), then the dir if empty."""
    keep = set(bound)
    try:
        names = os.listdir(run_dir)
    except OSError:
        return
    for n in names:
        p = run_dir / n
        try:
            st = os.lstat(p)
            if stat.S_ISSOCK(st.st_mode) and (st.st_dev, st.st_ino, st.st_ctime_ns) in keep:
                os.unlink(p)
        except OSError:
            pass
    try:
        os.rmdir(run_dir)  # only when empty: a restarted actor's sockets stay
    except OSError:
        pass


def _identities(args: Sequence[str]) -> list[Identity] | None:
    out = []
    for a in args:
        parts = a.split(":")
        if len(parts) != 3 or not all(p.isdigit() for p in parts):
            return None
        out.append((int(parts[0]), int(parts[1]), int(parts[2])))
    return out


def main(argv: Sequence[str]) -> int:
    run_dir: Path | None = None
    bound: list[Identity] | None = []
    if argv[:1] == ["--run-dir"]:
        bound = _identities(argv[2:])
        if len(argv) < 2 or not os.path.isabs(argv[1]) or bound is None:
            print("usage: ray_tether --run-dir DIR DEV:INO:CTIME_NS ...", file=sys.stderr)
            return 2
        run_dir = Path(argv[1])
    elif not argv or not argv[0].isdigit() or int(argv[0]) <= 1:
        print("usage: ray_tether PGID [CGROUP_PROCS ...] | --run-dir DIR DEV:INO:CTIME_NS ...", file=sys.stderr)
        return 2
    if os.fork():
        os._exit(0)  # the actor reaps this one at once; the tether goes on in the child
    os.setsid()
    got = b""
    while True:
        try:
            chunk = os.read(0, 64)
        except InterruptedError:
            continue
        except OSError:
            chunk = b""
        if not chunk:
            break
        got = (got + chunk)[-64:]
    if got.endswith(DONE):
        return 0
    if run_dir is not None:
        clear_run_dir(run_dir, bound or [])
        return 0
    return 0 if cut(int(argv[0]), [Path(a) for a in argv[1:]]) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
