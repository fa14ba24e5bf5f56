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

A harness outlives its daemon (issue 16): nothing ties it to the daemon's
life (no --die-with-parent, no PDEATHSIG), its output goes through a log
relay of its own (`hyperhive.sandbox.log_relay`), and `agents/<n>/harness.json`
records it, so the next daemon's `adopt` takes it over (`local_adopt`).
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hyperhive.logs as logs
from hyperhive.actors.ports import read_port_file
from hyperhive.backends.base import ExitCallback
from hyperhive.backends.local_adopt import (
    RECORD,
    HarnessRecord,
    Proc,
    boot_id,
    end_group,
    identify,
    identify_relay,
    read_record,
    reap_later,
    remove_record,
    signal_group,
    spawn,
    start_time,
    write_record,
)
from hyperhive.errors import SandboxUnavailable
from hyperhive.journal import check_unit_and_lines, tail_lines
from hyperhive.names import AgentName
from hyperhive.paths import Limits, StatePaths
from hyperhive.sandbox import view as sv
from hyperhive.sandbox.accounts import Account, account_for, own_sockets, prepare_dirs, unreachable
from hyperhive.sandbox.cgroups import AgentCgroup, Cgroups, OomWatch
from hyperhive.sandbox.launch import launch_argv

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
        "--applied-dir", str(paths.applied(name)),  # explicit: the agents' dirs may be anywhere (--agents-dir)
        "--api-socket", str(paths.api_socket(name)),
        "--proxy-socket", str(paths.proxy_socket(name)),
        "--bridge-ports", "fixed" if sandboxed else "any",
    ]
    return [*argv, "--sandboxed"] if sandboxed else argv


def unreachable_for_agents(paths: StatePaths) -> str | None:
    """Why a harness started as an agent's own uid could not run here (a dir on
    the way to the state dir, the agents dir, the interpreter or the venv it cannot pass), or None."""
    given = (paths.agents,) if paths.agents_root is not None else ()  # --agents-dir: outside the state dir
    for need in (paths.root, *given, *map(Path, sv.runtime_dirs())):
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


@dataclass
class LocalHandle:
    name: AgentName
    proc: Proc  # the top process: the launcher (exec'd into bwrap), or the harness itself
    cgroup: AgentCgroup | None = None
    relay: Proc | None = None  # its log relay, when known
    oom: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)  # handed over to the next daemon
    watcher: threading.Thread | None = None  # its end: the tree is gone and the cgroup removed
    oom_watch: OomWatch | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def adopted(self) -> bool:
        return self.proc.adopted


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
        self._released = 0  # harnesses handed over (close keeps their cgroups)

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
        record = self.paths.agent(name) / RECORD
        remove_record(record)  # one left by a harness that was not adopted
        proc, relay = spawn(argv, env, self.paths.harness_log(name), name)
        handle = LocalHandle(name, proc, cgroup, relay)
        self._record(handle, driver, account.uid)
        _log.info("container.start", agent=name, pid=proc.pid, sandboxed=self.sandboxed, uid=account.uid,
                  memory_mb=limits.memory_mb, pids=limits.pids, limited=cgroup is not None)
        self._watch(handle, on_exit)
        return handle

    def _record(self, handle: LocalHandle, driver: str, uid: int) -> None:
        """Write ``agents/<n>/harness.json``: what the next daemon adopts it by."""
        ticks = start_time(handle.pid)  # our child, not reaped yet: its pid is not reused
        if ticks is None:
            return  # already ended: the watcher reports it
        relay = handle.relay
        cgroups = tuple(str(d) for d in handle.cgroup.dirs.values()) if handle.cgroup is not None else ()
        try:
            write_record(self.paths.agent(handle.name) / RECORD, HarnessRecord(
                handle.pid, ticks, boot_id(), cgroups, self.sandboxed, driver, time.time(),
                relay.pid if relay else None, start_time(relay.pid) if relay else None, uid))
        except OSError as exc:  # the harness runs; only a later daemon could not adopt it
            _log.error("container.record_failed", agent=handle.name, error=str(exc))

    # --- adopt -------------------------------------------------------------------
    def adopt(self, name: AgentName, driver: str, on_exit: ExitCallback) -> LocalHandle | None:
        """Take over the harness an earlier daemon started, when its record still
        names it (`local_adopt.identify`) and it runs as this daemon would start it
        (driver, sandbox, cgroups, uid); None otherwise (the record is dropped; one that
        runs otherwise is ended first). Nothing is started here."""
        path = self.paths.agent(name) / RECORD
        record = read_record(path)
        if record is None:
            if path.exists():
                _log.warning("container.not_adopted", agent=name, reason="unreadable record")
                remove_record(path)
            return None
        found = identify(record)
        if isinstance(found, str):
            _log.warning("container.not_adopted", agent=name, pid=record.pid, reason=found)
            remove_record(path)
            return None
        cgroup = self.cgroups.agent(name) if self.cgroups is not None else None
        ours = tuple(str(d) for d in cgroup.dirs.values()) if cgroup is not None else ()
        account = self.account(name)
        differs = [what for what, same in (("driver", record.driver == driver),
                                           ("sandbox", record.sandboxed == self.sandboxed),
                                           ("cgroups", record.cgroups == ours),
                                           ("uid", record.uid in (None, account.uid))) if not same]
        if differs:
            _log.warning("container.not_adopted", agent=name, pid=record.pid, reason="runs otherwise",
                         differs=differs)
            end_group(found, cgroup if "cgroups" not in differs else None)
            remove_record(path)
            return None
        own_sockets(self.paths, name, account)  # this daemon bound them anew
        relay = identify_relay(record)
        if relay is not None:
            reap_later(relay, f"log-{name}")
        handle = LocalHandle(name, found, cgroup, relay)
        _log.info("container.adopted", agent=name, pid=found.pid, up_seconds=round(time.time() - record.started_at, 1),
                  sandboxed=record.sandboxed, limited=cgroup is not None)
        self._watch(handle, on_exit)
        return handle

    def release(self, handle: LocalHandle) -> None:
        """Hand the harness over to the next daemon: stop watching it, leave it,
        its record and its cgroup as they are (`hive serve --keep-agents`)."""
        handle.released.set()
        if handle.oom_watch is not None:
            handle.oom_watch.close()
        self._released += 1
        _log.info("container.released", agent=handle.name, pid=handle.pid)

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

        def on_oom() -> None:  # the OOM watch's thread: the whole container ends
            # v1 tells as the OOM begins, before the kernel has picked its victim
            # (oom_kill is still the old count): the container ends either way.
            assert cgroup is not None
            if not handle.oom.is_set():
                handle.oom.set()
                _log.warning("container.oom", agent=handle.name, oom_kills=cgroup.oom_kills() - before)
            cgroup.kill_all()

        if cgroup is not None:
            handle.oom_watch = cgroup.watch_oom(on_oom)

        def wait() -> None:
            handle.proc.reap()
            if handle.released.is_set():
                return  # the next daemon's now: its tree, record and cgroup are left alone
            if cgroup is not None:
                if not cgroup.kill_all():  # whatever it left behind (dev servers, detached children)
                    _log.error("container.left_running", agent=handle.name, pids=cgroup.pids())
                if cgroup.oom_kills() > before:
                    handle.oom.set()
            if handle.oom_watch is not None:
                handle.oom_watch.close()
            if cgroup is not None and self.cgroups is not None:
                self.cgroups.forget(handle.name)  # made afresh at the next start (peak and counters too)
            remove_record(self.paths.agent(handle.name) / RECORD)
            on_exit(handle.proc.returncode, OUT_OF_MEMORY if handle.oom.is_set() else None)

        handle.watcher = threading.Thread(target=wait, name=f"watch-{handle.name}", daemon=True)
        handle.watcher.start()

    # --- stop ------------------------------------------------------------------
    def stop(self, handle: LocalHandle, timeout: float = 5.0) -> int | None:
        """SIGTERM the harness's process group, SIGKILL it after ``timeout``; then
        everything left in its cgroup. Its exit status (None: adopted, unknown)."""
        proc = handle.proc
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            if proc.ended.is_set() or not signal_group(proc.pid, sig) or proc.wait(wait):
                break
        proc.wait(None)
        # A harness that bwrap had just forked when the signal came can outlive
        # bwrap: it still has the group id.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if handle.cgroup is not None:
            handle.cgroup.kill_all()
        if handle.watcher is not None:  # a start right after must not meet this one's cleanup
            handle.watcher.join(timeout=15)
        if handle.relay is not None and not handle.relay.wait(15):  # nor two relays on one log
            _log.warning("container.log_relay_left", agent=handle.name, pid=handle.relay.pid)
        remove_record(self.paths.agent(handle.name) / RECORD)
        _log.info("container.stopped", agent=handle.name, returncode=proc.returncode, adopted=proc.adopted)
        return proc.returncode

    def destroy(self, name: AgentName) -> None:
        if self.cgroups is not None:
            self.cgroups.forget(name)

    def close(self) -> None:
        """At daemon stop, after every harness: remove the daemon's cgroup namespace,
        unless harnesses were handed over (their cgroups are in it)."""
        if self._released:
            _log.info("backend.agents_kept", count=self._released)
        elif self.cgroups is not None:
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
