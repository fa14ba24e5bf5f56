"""Crash supervision for the nixos backend: one watcher thread per started
container polls ``machinectl show <c> --property=State --property=Leader``
every ``poll_seconds``. When machined no longer knows the machine and nobody
asked for a stop, ``on_exit(returncode, reason)`` runs on that thread, with
what ``how_it_ended`` says (see nixos.py). Any other machinectl failure is
logged once per streak and polling goes on: an unreachable machined is not a
crash. ``Watchers.close`` (the daemon's stop) ends every watcher; the
containers themselves run on.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import hyperhive.logs as logs
from hyperhive.backends import nixos_argv as argv
from hyperhive.backends.base import ExitCallback
from hyperhive.names import AgentName

__all__ = ["HowItEnded", "NixosHandle", "Watchers", "show_machine"]

_log = logs.get("hyperhive.backend.nixos")

# The harness's returncode (None: no exit record) and the reason ("out of memory" or None).
HowItEnded = Callable[[AgentName], tuple[int | None, str | None]]


def show_machine(name: AgentName, timeout: float) -> dict[str, str] | None:
    """machined's State and Leader of the agent's machine; None when it knows none
    (or cannot be asked). Quiet: at boot most stopped containers have no machine."""
    try:
        r = subprocess.run(argv.show_argv(name), capture_output=True, text=True, timeout=timeout,
                           stdin=subprocess.DEVNULL, env=argv.command_env(os.environ))
    except (OSError, subprocess.TimeoutExpired):
        return None
    return argv.parse_show(r.stdout) if r.returncode == 0 else None


@dataclass
class NixosHandle:
    name: AgentName
    container: str
    on_exit: ExitCallback
    stopped: threading.Event = field(default_factory=threading.Event)
    pid: int | None = None  # the container's leader, once the watcher has seen it


class Watchers:
    """The watcher threads of one backend."""

    def __init__(self, poll_seconds: float, query_seconds: float, how_it_ended: HowItEnded) -> None:
        self._poll = poll_seconds
        self._query = query_seconds
        self._how_it_ended = how_it_ended
        self._handles: list[NixosHandle] = []  # the handles whose watcher may still poll
        self._lock = threading.Lock()

    def watch(self, handle: NixosHandle) -> None:
        with self._lock:
            self._handles = [h for h in self._handles if not h.stopped.is_set()] + [handle]
        threading.Thread(target=self._loop, args=(handle,), name=f"watch-{handle.name}", daemon=True).start()

    def close(self) -> None:
        with self._lock:
            handles, self._handles = self._handles, []
        for handle in handles:
            handle.stopped.set()

    def _loop(self, handle: NixosHandle) -> None:
        failing = False
        cmd = argv.show_argv(handle.name)
        while not handle.stopped.wait(self._poll):
            try:
                r = subprocess.run(cmd, capture_output=True, text=True, timeout=self._query,
                                   stdin=subprocess.DEVNULL, env=argv.command_env(os.environ))
            except (OSError, subprocess.TimeoutExpired) as exc:
                r = subprocess.CompletedProcess(cmd, -1, "", str(exc))
            if r.returncode == 0:
                leader = argv.parse_show(r.stdout).get("Leader", "")
                handle.pid = int(leader) if leader.isdigit() else handle.pid
                failing = False
                continue
            if "No machine" in r.stderr:
                if handle.stopped.is_set():
                    return  # a stop we asked for raced the poll
                handle.stopped.set()
                rc, reason = self._how_it_ended(handle.name)
                if rc is None:
                    _log.warning("container.exit_unknown", agent=handle.name, container=handle.container)
                    rc = -signal.SIGKILL if reason else -signal.SIGTERM
                _log.info("container.exited", agent=handle.name, returncode=rc, reason=reason)
                handle.on_exit(rc, reason)
                return
            if not failing:
                _log.warning("container.watch_failed", agent=handle.name, returncode=r.returncode,
                             stderr=r.stderr.strip())
                failing = True
