"""What a daemon process holds for its life: the state dir's lock (one daemon
per state dir) and a file limit raised to the hard limit."""

from __future__ import annotations

import fcntl
import os
from typing import IO

import hyperhive.logs as logs
from hyperhive.errors import StateDirBusy
from hyperhive.paths import StatePaths

__all__ = ["raise_file_limit", "take_lock"]

_log = logs.get("hyperhive.daemon")


def take_lock(paths: StatePaths) -> IO[str]:
    """``run/daemon.lock``, held (flock) until the process ends; StateDirBusy when another holds it."""
    (paths.root / "run").mkdir(parents=True, exist_ok=True)
    f = open(paths.root / "run" / "daemon.lock", "a+")  # noqa: SIM115 - held for the daemon's life
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise StateDirBusy(f"another daemon is running on {paths.root} (it holds run/daemon.lock)") from None
    f.seek(0)
    f.truncate()
    f.write(f"{os.getpid()}\n")
    f.flush()
    return f


def raise_file_limit() -> None:
    """Up to the hard limit: every agent holds a few sockets to the daemon."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        except (ValueError, OSError):
            _log.warning("daemon.file_limit", soft=soft, hard=hard)
