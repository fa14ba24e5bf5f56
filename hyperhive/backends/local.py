"""The `local` backend: each agent's harness is a supervised process tree on
this host, in a bubblewrap sandbox when one can be had.

What the sandbox holds and shares is `hyperhive.sandbox.view`; in short the
agent sees the system dirs, its own state dir and workspace, its applied
config and the daemon's sockets, and nothing else: no host network, no
capability, no daemon credential. When the daemon is root, every agent runs
as its own unprivileged uid (`hyperhive.sandbox.accounts`). Every harness is
started through `hyperhive.sandbox.launch`, which puts it in the agent's
cgroup (memory and pids limits) before anything else runs; an OOM kill
anywhere in that cgroup ends the whole container, reported as "out of memory".
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hyperhive.logs as logs
from hyperhive.actors.ports import read_port_file
from hyperhive.backends.base import ExitCallback
from hyperhive.errors import SandboxUnavailable
from hyperhive.journal import check_unit_and_lines, tail_lines
from hyperhive.names import AgentName
from hyperhive.paths import Limits, StatePaths
from hyperhive.sandbox import view as sv
from hyperhive.sandbox.accounts import Account, account_for, own_sockets, prepare_dirs, unreachable
from hyperhive.sandbox.cgroups import AgentCgroup, Cgroups, OomWatch
from hyperhive.sandbox.launch import launch_argv
from hyperhive.sandbox.safefs import append_nofollow

__all__ = ["OUT_OF_MEMORY", "LocalBackend", "LocalHandle", "harness_argv", "probe_sandbox"]

_log = logs.get("hyperhive.backend.local")

OUT_OF_MEMORY = "out of memory"
DEFAULT_LIMITS = Limits(4096, 512)


def harness_argv(paths: StatePaths, name: AgentName, driver: str, sandboxed: bool) -> list[str]:
    """The harness command line; its web UI goes on a unix socket in its state
    dir, which the daemon relays from the agent's sticky port."""
    argv = [
        sys.executable, "-I", "-m", "hyperhive", "harness",  # -I: never a hyperhive/ in the cwd or PYTHONPATH
        "--name", name,
        "--socket", str(paths.socket(name)),
        "--state-dir", str(paths.state(name)),
        "--driver", driver,
        "--web-socket", str(paths.web_socket(name)),
        "--workspace", str(paths.workspace(name)),
        "--api-socket", str(paths.api_socket(name)),
        "--proxy-socket", str(paths.proxy_socket(name)),
        "--bridge-ports", "fixed" if sandboxed else "any",
    ]
    return [*argv, "--sandboxed"] if sandboxed else argv


def unreachable_for_agents(paths: StatePaths) -> str | None:
    """Why a harness started as an agent's own uid could not run here (a dir on
    the way to the state dir, the interpreter or the venv it cannot pass), or None."""
    for need in (paths.root, *map(Path, sv.runtime_dirs())):
        blocked = unreachable(need)
        if blocked is not None:
            return f"agent uids cannot reach {need}: {blocked} has no o+x"
    return None


def probe_sandbox(paths: StatePaths, uid: int | None) -> str | None:
    """Why the sandbox cannot be had here, or None when a probe sandbox ran.

    ``uid``: the uid harnesses will run as (root daemons); the probe runs as it.
    """
    import shutil

    if shutil.which("bwrap") is None:
        return "bwrap is not installed"
    system = sv.host_system_entries()
    argv = ["bwrap"]
    for kind, path in system:
        argv += ["--symlink", kind[5:], path] if kind.startswith("link:") else ["--ro-bind", path, path]
    for d in sv.runtime_dirs():
        argv += ["--ro-bind", d, d]
    argv += ["--dev", "/dev", "--proc", "/proc", "--unshare-all", "--unshare-user", "--uid", str(sv.AGENT_UID),
             "--gid", str(sv.AGENT_GID), "--cap-drop", "ALL", "--die-with-parent", "--clearenv",
             "--", sys.executable, "-I", "-S", "-c", "pass"]
    kw: dict[str, Any] = {"user": uid, "group": uid, "extra_groups": []} if uid is not None else {}
    try:
        r = subprocess.run(argv, capture_output=True, timeout=20, env={"PATH": "/usr/bin:/bin"}, cwd="/", **kw)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bwrap did not run: {exc}"
    if r.returncode != 0:
        return f"bwrap failed: {r.stderr.decode(errors='replace').strip()[:300]}"
    return None


LOG_MAX = 16 << 20  # harness.log is rotated to harness.log.1 past this


def _copy_log(proc: subprocess.Popen[bytes], path: Path, limit: int = LOG_MAX) -> None:
    """Append the harness's output to its log, rotating past ``limit`` bytes, until
    every process holding the pipe is gone. If the log cannot be written the
    output is still drained (a full pipe would stall the harness)."""
    assert proc.stdout is not None
    src = proc.stdout.fileno()
    fd: int | None = None
    size = 0
    try:
        try:
            fd = append_nofollow(path)
            size = os.fstat(fd).st_size
        except OSError as exc:
            _log.error("container.log_unwritable", path=str(path), error=str(exc))
        while chunk := os.read(src, 1 << 16):
            if fd is None:
                continue
            try:
                if size + len(chunk) > limit and size > 0:
                    os.close(fd)
                    fd = None
                    os.replace(path, path.with_name(path.name + ".1"))
                    fd = append_nofollow(path)
                    size = 0
                os.write(fd, chunk)
                size += len(chunk)
            except OSError as exc:
                _log.error("container.log_unwritable", path=str(path), error=str(exc))
                if fd is not None:
                    os.close(fd)
                fd = None
    except OSError:
        _log.exception("container.log_failed", path=str(path))
    finally:
        if fd is not None:
            os.close(fd)
        proc.stdout.close()


@dataclass
class LocalHandle:
    name: AgentName
    proc: subprocess.Popen[bytes]
    cgroup: AgentCgroup | None = None
    oom: threading.Event = field(default_factory=threading.Event)
    watcher: threading.Thread | None = None  # its end: the tree is gone and the cgroup removed
    copier: threading.Thread | None = None  # harness output → harness.log

    @property
    def pid(self) -> int:
        return self.proc.pid


class LocalBackend:
    kind = "local"

    def __init__(self, paths: StatePaths, sandbox: str = "auto", *, limits: Limits = DEFAULT_LIMITS,
                 uid_base: int = 1_900_000_000, gateway_key: bool = False, cgroups: bool = True) -> None:
        self.paths = paths
        self.default_limits = limits
        self.uid_base = uid_base
        self.gateway_key = gateway_key
        self.root = os.geteuid() == 0
        # Root starts each harness as the agent's own uid, which must reach the venv and its dirs.
        blocked = unreachable_for_agents(paths) if self.root else None
        self.switch_uid = self.root and blocked is None
        if blocked is not None:
            _log.warning("backend.no_agent_uids", reason=blocked)
        self.unsandboxed_reason: str | None = None
        if sandbox == "off":
            self.unsandboxed_reason = "sandbox=off"
        elif blocked is not None:
            self.unsandboxed_reason = blocked
        else:
            self.unsandboxed_reason = probe_sandbox(paths, uid_base + 65535 if self.root else None)
        if sandbox == "on" and self.unsandboxed_reason:
            raise SandboxUnavailable(f"--sandbox on, but the sandbox cannot be had: {self.unsandboxed_reason}")
        self.sandboxed = self.unsandboxed_reason is None
        if not self.sandboxed:
            _log.warning("backend.unsandboxed", reason=self.unsandboxed_reason)
        namespace = "hyperhive-" + hashlib.sha256(str(paths.root.resolve()).encode()).hexdigest()[:10]
        self.cgroups = Cgroups.detect(namespace) if cgroups else None
        if self.cgroups is None:
            _log.warning("backend.no_limits", reason="no usable cgroup controllers (memory, pids)")
        self._system = sv.host_system_entries()
        self._etc = sv.host_etc_entries()
        claude = sv.claude_dir(os.environ)
        self._runtime = sv.runtime_dirs(extra=[claude] if claude else [])

    # --- start -----------------------------------------------------------------
    def start(self, name: AgentName, driver: str, on_exit: ExitCallback) -> LocalHandle:
        """Start the harness; ``on_exit(returncode, reason)`` runs on a watcher
        thread when it ends (reason "out of memory" after an OOM kill)."""
        if not self.sandboxed:
            _log.warning("backend.unsandboxed", agent=name, reason=self.unsandboxed_reason)
        account = account_for(self.paths, name, self.uid_base, self.switch_uid)
        etc_dir = prepare_dirs(self.paths, name, account)
        own_sockets(self.paths, name, account)
        limits = self.paths.load_applied(name).limits(self.default_limits.memory_mb, self.default_limits.pids)
        cgroup = self.cgroups.prepare(name, limits) if self.cgroups is not None else None
        argv, env = self._command(name, driver, str(etc_dir))
        if cgroup is not None or account.switch:
            argv = launch_argv(sys.executable, cgroup.procs_files if cgroup else (),
                               account.uid if account.switch else None,
                               account.gid if account.switch else None, argv)
        # Through a pipe, never the log file itself: a process of the agent's could
        # take the harness's stdout (pidfd_getfd) and truncate or rewrite the log.
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            cwd="/", env=env,  # never a dir the agent writes: python -m would import from it
            start_new_session=True, close_fds=True,
        )
        handle = LocalHandle(name, proc, cgroup)
        handle.copier = threading.Thread(target=_copy_log, args=(proc, self.paths.harness_log(name)),
                                         name=f"log-{name}", daemon=True)
        handle.copier.start()
        _log.info("container.start", agent=name, pid=proc.pid, sandboxed=self.sandboxed, uid=account.uid,
                  memory_mb=limits.memory_mb, pids=limits.pids, limited=cgroup is not None)
        self._watch(handle, on_exit)
        return handle

    def _command(self, name: AgentName, driver: str, etc_dir: str) -> tuple[list[str], dict[str, str]]:
        paths = self.paths
        home = str(paths.state(name))
        env = sv.agent_env(os.environ, home, [os.path.dirname(sys.executable)], self.gateway_key,
                           bridges=self.sandboxed)
        inner = harness_argv(paths, name, driver, self.sandboxed)
        if not self.sandboxed:
            return inner, env
        view = sv.SandboxView(
            name=name, home=home, workspace=str(paths.workspace(name)), run=str(paths.run(name)),
            applied=str(paths.applied(name)), etc_dir=etc_dir, system=self._system, etc=self._etc,
            runtime=self._runtime, env=tuple(sorted(env.items())),
        )
        # bwrap's own environment shows in the sandbox (/proc/1/environ): the same clean one.
        return sv.bwrap_argv(view, inner), env

    def _watch(self, handle: LocalHandle, on_exit: ExitCallback) -> None:
        cgroup = handle.cgroup
        before = cgroup.oom_kills() if cgroup is not None else 0
        watch: OomWatch | None = None

        def on_oom() -> None:  # the OOM watch's thread: the whole container ends
            # v1 tells as the OOM begins, before the kernel has picked its victim
            # (oom_kill is still the old count): the container ends either way.
            assert cgroup is not None
            if not handle.oom.is_set():
                handle.oom.set()
                _log.warning("container.oom", agent=handle.name, oom_kills=cgroup.oom_kills() - before)
            cgroup.kill_all()

        if cgroup is not None:
            watch = cgroup.watch_oom(on_oom)

        def wait() -> None:
            rc = handle.proc.wait()
            if cgroup is not None:
                if not cgroup.kill_all():  # whatever it left behind (dev servers, detached children)
                    _log.error("container.left_running", agent=handle.name, pids=cgroup.pids())
                if cgroup.oom_kills() > before:
                    handle.oom.set()
            if watch is not None:
                watch.close()
            if cgroup is not None and self.cgroups is not None:
                self.cgroups.forget(handle.name)  # made afresh at the next start (peak and counters too)
            on_exit(rc, OUT_OF_MEMORY if handle.oom.is_set() else None)

        handle.watcher = threading.Thread(target=wait, name=f"watch-{handle.name}", daemon=True)
        handle.watcher.start()

    # --- stop ------------------------------------------------------------------
    def stop(self, handle: LocalHandle, timeout: float = 5.0) -> int:
        """SIGTERM the harness's process group, SIGKILL it after ``timeout``; then
        everything left in its cgroup."""
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
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if handle.cgroup is not None:
            handle.cgroup.kill_all()
        for t in (handle.watcher, handle.copier):  # a start right after must not meet this one's cleanup
            if t is not None:
                t.join(timeout=15)
        _log.info("container.stopped", agent=handle.name, returncode=rc)
        return rc

    def destroy(self, name: AgentName) -> None:
        if self.cgroups is not None:
            self.cgroups.forget(name)

    def close(self) -> None:
        """At daemon stop, after every harness: remove the daemon's cgroup namespace."""
        if self.cgroups is not None:
            self.cgroups.discard_namespace()

    # --- observation -------------------------------------------------------------
    def usage(self, name: AgentName) -> dict[str, int | None] | None:
        """Memory (current, peak) and processes of the agent's cgroup; None without one."""
        if self.cgroups is None:
            return None
        try:
            return self.cgroups.agent(name).usage()
        except (OSError, ValueError):
            return None

    def account(self, name: AgentName) -> Account:
        return account_for(self.paths, name, self.uid_base, self.switch_uid)

    def web_port(self, name: AgentName) -> int | None:
        return read_port_file(self.paths.agent(name) / "port")

    def log_path(self, name: AgentName) -> Path:
        return self.paths.harness_log(name)

    def journal(self, name: AgentName, unit: str, lines: int) -> str:
        """The last ``lines`` lines (at most 5000) of the agent's harness.log
        (daemon-owned, outside the agent's dirs).

        Here the harness is the whole container, so unit "harness" and ""
        (the machine) read the same log; any other unit is refused.
        """
        unit, lines = check_unit_and_lines(unit, lines)
        return tail_lines(self.paths.harness_log(name), lines)
