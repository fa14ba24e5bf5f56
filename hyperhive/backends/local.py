"""The `local` backend: each agent's harness is a supervised subprocess,
sandboxed with bubblewrap when it works here.

Isolation when sandboxed (each layer is in the README):
- the host's / is mounted read-only; /tmp is a fresh tmpfs; /dev and /proc are minimal;
- the whole hive state dir is hidden behind a tmpfs, then only this agent's
  state dir and run dir (its socket) are bound back read-write and its applied
  config read-only: no other agent's socket, state or the hive database is visible;
- every namespace is unshared but the network (the claude driver needs its API);
- the sandbox dies with the daemon (--die-with-parent).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import hyperhive.logs as logs
from hyperhive.actors.ports import read_port_file
from hyperhive.journal import check_unit_and_lines, tail_lines
from hyperhive.names import MANAGER, AgentName
from hyperhive.paths import StatePaths

__all__ = ["LocalBackend", "LocalHandle", "bwrap_argv", "bwrap_works", "harness_argv", "runtime_dirs"]

_log = logs.get("hyperhive.backend.local")


def harness_argv(paths: StatePaths, name: AgentName, driver: str, web_port: int | None = None) -> list[str]:
    """``web_port``: the agent's sticky port (F20); None lets the harness pick a free one."""
    return [
        sys.executable, "-m", "hyperhive", "harness",
        "--name", name,
        "--socket", str(paths.socket(name)),
        "--state-dir", str(paths.state(name)),
        "--driver", driver,
        "--web-port", str(web_port or 0),
    ]


HIDDEN = "/tmp"  # a fresh tmpfs in every sandbox


def runtime_dirs(hidden: list[Path]) -> list[str]:
    """What running the harness needs that a sandbox's tmpfs would hide: the
    interpreter, the venv and the hyperhive package, when they live under one
    of ``hidden`` (a checkout in /tmp, as a CI clone may be)."""
    import hyperhive

    wanted = {Path(sys.prefix), Path(sys.base_prefix), Path(os.path.realpath(sys.executable)).parent,
              Path(hyperhive.__file__).resolve().parent.parent}
    out = set()
    for d in wanted:
        d = d.resolve()
        if any(d == h or d.is_relative_to(h) for h in hidden):
            out.add(str(d))
    return sorted(out)


def bwrap_argv(
    paths: StatePaths, name: AgentName, inner: list[str], config_dirs: list[str] | None = None,
    runtime: list[str] | None = None,
) -> list[str]:
    """The bubblewrap command line around ``inner`` (a pure function).

    ``config_dirs``: the agents' config repos bound read-write (the manager's,
    which commits to them, F12); nothing else of another agent is bound.
    ``runtime``: directories bound back read-only under the fresh /tmp
    (`runtime_dirs`), before the state dir is hidden.
    """
    root = str(paths.root)
    state, run, applied = (str(p) for p in (paths.state(name), paths.run(name), paths.applied(name)))
    configs = [arg for d in config_dirs or [] for arg in ("--bind", d, d)]
    keep = [arg for d in runtime or [] for arg in ("--ro-bind", d, d)]
    return [
        "bwrap",
        "--ro-bind", "/", "/",
        "--dev", "/dev",
        "--proc", "/proc",
        "--tmpfs", HIDDEN,
        *keep,
        "--tmpfs", root,
        "--bind", state, state,
        "--bind", run, run,
        "--ro-bind", applied, applied,
        *configs,
        "--unshare-all", "--share-net",
        "--die-with-parent",
        "--chdir", state,
        "--setenv", "HOME", state,
        "--",
        *inner,
    ]


def bwrap_works() -> bool:
    if shutil.which("bwrap") is None:
        return False
    try:
        r = subprocess.run(
            ["bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
             "--unshare-all", "--share-net", "--die-with-parent", "true"],
            capture_output=True, timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0


@dataclass
class LocalHandle:
    name: AgentName
    proc: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.proc.pid


class LocalBackend:
    kind = "local"

    def __init__(self, paths: StatePaths, sandbox: str = "auto") -> None:
        self.paths = paths
        if sandbox == "off":
            self.sandboxed = False
        else:
            self.sandboxed = bwrap_works()
            if sandbox == "on" and not self.sandboxed:
                raise RuntimeError("sandbox=on but bubblewrap does not work here")
        if not self.sandboxed:
            reason = "sandbox=off" if sandbox == "off" else "bwrap missing or not usable"
            _log.warning("backend.unsandboxed", reason=reason)
        self._runtime = runtime_dirs([Path(HIDDEN).resolve()])

    def start(self, name: AgentName, driver: str, on_exit: Callable[[int], None]) -> LocalHandle:
        """Start the harness; ``on_exit(returncode)`` runs on a watcher thread when it ends."""
        inner = harness_argv(self.paths, name, driver, read_port_file(self.paths.agent(name) / "port"))
        argv = (bwrap_argv(self.paths, name, inner, self._config_dirs(name), self._runtime) if self.sandboxed
                else inner)
        state = self.paths.state(name)
        state.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "HOME": str(state), "PYTHONUNBUFFERED": "1"}
        with open(self.paths.harness_log(name), "ab") as log:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                cwd=state, env=env, start_new_session=True, close_fds=True,
            )
        _log.info("container.start", agent=name, pid=proc.pid, sandboxed=self.sandboxed)

        def watch() -> None:
            on_exit(proc.wait())

        threading.Thread(target=watch, name=f"watch-{name}", daemon=True).start()
        return LocalHandle(name, proc)

    def stop(self, handle: LocalHandle, timeout: float = 5.0) -> int:
        """SIGTERM the harness's process group, SIGKILL it after ``timeout``."""
        proc = handle.proc
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            if proc.poll() is not None:
                break
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(wait)
            except subprocess.TimeoutExpired:
                continue
        rc = proc.wait()
        # A harness that bwrap had just forked when the signal came can outlive
        # bwrap (before --die-with-parent took hold): it still has the group id.
        # Pids are allocated cyclically, so the freed id is not someone else's yet.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
            _log.debug("container.group_swept", agent=handle.name)
        except (ProcessLookupError, PermissionError):
            pass
        _log.info("container.stopped", agent=handle.name, returncode=rc)
        return rc

    def _config_dirs(self, name: AgentName) -> list[str]:
        """The manager commits to every agent's config repo: those that exist
        when its harness starts are bound in (a later spawn needs a restart of m1nd)."""
        if name != MANAGER or not self.paths.agents.is_dir():
            return []
        return sorted(str(d) for d in self.paths.agents.glob("*/config") if d.is_dir() and not d.is_symlink())

    def log_path(self, name: AgentName) -> Path:
        return self.paths.harness_log(name)

    def journal(self, name: AgentName, unit: str, lines: int) -> str:
        """The last ``lines`` lines (at most 5000) of the agent's harness.log.

        Here the harness is the whole container, so unit "harness" and ""
        (the machine) read the same log; any other unit is refused.
        """
        unit, lines = check_unit_and_lines(unit, lines)
        return tail_lines(self.paths.harness_log(name), lines)
