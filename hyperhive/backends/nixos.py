"""The `nixos` backend: one NixOS container per agent, through `nixos-container`,
`machinectl` and `journalctl -M` (the command lines are in nixos_argv.py).

Lifecycle: ``start`` creates the container on first use (generating
``applied/<name>/flake.nix``, see nix_flake.py), then starts it. A start
after the applied config changed (agent.nix, the driver, the hive's flake)
runs ``nixos-container update`` first, so a stop + start is also a rebuild:
``applied/<name>/.built`` holds the hash of what the container was last built
from. ``stop`` with no grace (kill) is ``nixos-container terminate``. In the
container, the harness unit powers the machine off when it ends for any
reason (harness-base.nix: SuccessAction/FailureAction=poweroff), so a
container is up exactly while its harness is, and `nixos-container start`
brings both back.

The sandbox (nix_flake.py has the details): a network namespace of its own
with loopback alone; the daemon's sockets (hive.sock, api.sock, proxy.sock)
in the run dir, bound read-only at /hive/run; the state dir and workspace
read-write; the applied config read-only. The harness unit is given those
sockets and relays the gateway and the proxy on 127.0.0.1 inside
(harness-base.nix); its web UI is ``<state>/web.sock``, which the daemon
relays from the agent's sticky port. No environment of the daemon's reaches
the container (nixos_argv.command_env).

Limits: before every start (and a rebuild's restart) the container unit gets
``MemoryMax``/``MemorySwapMax=0``/``TasksMax`` (nixos_argv.set_limits_argv):
the applied agent.json's ``limits``, the backend's ``limits`` where it sets
none. OOMPolicy stays the container unit's own (``continue``, as for any
unit with Delegate=yes): ``stop`` there would fail the unit, and
container@.service's Restart=on-failure would then restart it behind the
daemon's back. Instead the harness unit inside has OOMPolicy=stop, so an OOM
kill of the harness or of anything it runs ends the harness, which records
``oom-kill`` and powers the machine off.

Adoption (issue 16): a daemon that stops with its agents kept (``--keep-agents``,
``systemctl reload``) or crashes leaves the containers running; at boot the
next one adopts each that machined reports running (``adopt``) and watches it
again, without starting or kicking it.

Crash supervision (nixos_watch.py): a watcher thread per started container
polls machinectl; when the machine is gone and nobody asked for a stop,
``on_exit(returncode, reason)`` runs, as with the local backend. The
returncode comes from ``<state>/harness.exit``, written by the unit's
ExecStopPost; if it is missing (the machine was stopped from outside, e.g.
``machinectl terminate``), the exit is reported as killed by SIGTERM (SIGKILL
after an OOM kill) and logged as ``container.exit_unknown``. ``reason`` is
"out of memory" when that record or the container unit's ``Result=`` (one
``systemctl show``) says ``oom-kill``, else None.

Every failing command raises BackendFailed carrying its stderr, and is logged.

Environment (the NixOS module sets the first two):
    HYPERHIVE_FLAKE               flake ref of the hive's nix/ flake, the input of every agent flake
    HYPERHIVE_AGENT_TEMPLATE      the agent.nix copied into a new agent's applied dir
    HYPERHIVE_NIXOS_CONF_DIR      where nixos-container keeps <c>.conf (default /etc/nixos-containers)
    HYPERHIVE_NIXOS_POLL_SECONDS  watcher interval (default 2)
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import signal
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import hyperhive.logs as logs
from hyperhive.actors.ports import read_port_file
from hyperhive.backends import nixos_argv as argv
from hyperhive.backends.base import ExitCallback, NoHostResources
from hyperhive.backends.nix_flake import (
    EXIT_RECORD,
    AgentFlake,
    agent_flake,
    bind_flags,
    container_conf,
    container_name,
    exit_reason,
    parse_exit_record,
)
from hyperhive.backends.nixos_watch import NixosHandle, Watchers, show_machine
from hyperhive.errors import BackendFailed, Conflict
from hyperhive.names import AgentName, is_valid_name
from hyperhive.paths import Limits, StatePaths
from hyperhive.settings import AGENT_TEMPLATE, NIXOS_CONF_DIR, NIXOS_FLAKE, NIXOS_POLL_SECONDS

__all__ = ["DEFAULT_LIMITS", "ExitCallback", "NixosBackend", "NixosHandle", "NixosOptions", "run_command"]

_log = logs.get("hyperhive.backend.nixos")
BUILD_SECONDS = 3600.0  # create/update build a NixOS system
LIFECYCLE_SECONDS = 300.0
QUERY_SECONDS = 30.0
BUILT_STAMP = ".built"
# Not part of the NixOS system: nix's lock, and the daemon's own agent.json.
# Hidden files (the stamp, a .git) are skipped too.
_NOT_CONFIG = frozenset({"flake.lock", "agent.json"})
DEFAULT_LIMITS = Limits(memory_mb=4096, pids=512)


def run_command(cmd: list[str], timeout: float) -> str:
    """Run ``cmd``; its stdout, or BackendFailed with its stderr."""
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                           env=argv.command_env(os.environ))
    except FileNotFoundError:
        raise BackendFailed(f"{cmd[0]} not found on PATH (the nixos backend needs it)") from None
    except subprocess.TimeoutExpired:
        raise BackendFailed(f"{' '.join(cmd)} did not finish within {timeout:g}s") from None
    if r.returncode != 0:
        stderr = r.stderr.strip() or "(no stderr)"
        _log.error("container.command_failed", argv=cmd, returncode=r.returncode, stderr=stderr)
        raise BackendFailed(f"{' '.join(cmd)} failed with status {r.returncode}: {stderr}")
    return r.stdout


@dataclass(frozen=True)
class NixosOptions:
    hyperhive_flake: str
    agent_template: Path
    conf_dir: Path = Path("/etc/nixos-containers")
    poll_seconds: float = 2.0
    system: str = "x86_64-linux"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> NixosOptions:
        flake = NIXOS_FLAKE.read(env)
        if not flake:
            raise BackendFailed("HYPERHIVE_FLAKE is not set (the hyperhive flake ref for agent flakes)")
        poll = NIXOS_POLL_SECONDS.read(env)
        if not poll > 0:
            raise BackendFailed(f"HYPERHIVE_NIXOS_POLL_SECONDS must be > 0, got {poll}")
        return cls(
            hyperhive_flake=flake,
            agent_template=AGENT_TEMPLATE.read(env),
            conf_dir=NIXOS_CONF_DIR.read(env),
            poll_seconds=poll,
            system={"aarch64": "aarch64-linux", "arm64": "aarch64-linux"}.get(
                platform.machine(), "x86_64-linux"),
        )


class NixosBackend(NoHostResources):
    kind = "nixos"
    sandboxed = True  # the container is the isolation

    def __init__(self, paths: StatePaths, options: NixosOptions,
                 run: Callable[[list[str], float], str] = run_command, *,
                 limits: Limits = DEFAULT_LIMITS) -> None:
        """``limits``: the daemon's defaults, for an agent whose agent.json sets none."""
        self.paths = paths
        self.options = options
        self._run = run
        self.default_limits = limits
        self._watchers = Watchers(options.poll_seconds, QUERY_SECONDS, self._how_it_ended)

    @classmethod
    def from_env(cls, paths: StatePaths, env: Mapping[str, str] | None = None, *,
                 limits: Limits = DEFAULT_LIMITS) -> NixosBackend:
        return cls(paths, NixosOptions.from_env(os.environ if env is None else env), limits=limits)

    # --- files ------------------------------------------------------------
    def conf_path(self, name: AgentName) -> Path:
        return self.options.conf_dir / f"{container_name(name)}.conf"

    def exists(self, name: AgentName) -> bool:
        return self.conf_path(name).exists()

    def write_flake(self, name: AgentName, driver: str) -> Path:
        """Write ``applied/<name>/flake.nix`` (and agent.nix from the template if absent)."""
        applied = self.paths.applied(name)
        applied.mkdir(parents=True, exist_ok=True)
        agent_nix = applied / "agent.nix"
        if not agent_nix.exists():
            try:
                shutil.copyfile(self.options.agent_template, agent_nix)
            except OSError as exc:
                raise BackendFailed(f"cannot copy the agent template {self.options.agent_template}: {exc}") from None
        spec = AgentFlake(name, driver, self.options.hyperhive_flake, self.options.system)
        (applied / "flake.nix").write_text(agent_flake(spec))
        return applied

    def _agent_dirs(self, name: AgentName) -> tuple[Path, Path, Path]:
        """The run, state and workspace dirs, made if absent (nspawn refuses to bind a missing dir)."""
        dirs = (self.paths.run(name), self.paths.state(name), self.paths.workspace(name))
        for d in dirs:
            d.mkdir(parents=True, exist_ok=True)
        return dirs

    def _bind_into_conf(self, name: AgentName) -> None:
        """A loopback-only private network and the agent's dirs bound in;
        nixos-container create wrote the rest. Rewritten before every start,
        so a container created by an older hive gets today's sandbox."""
        conf = self.conf_path(name)
        run, state, work = self._agent_dirs(name)
        flags = bind_flags(str(run), str(state), str(work), str(self.paths.applied(name)))
        text = conf.read_text() if conf.exists() else ""
        new = container_conf(text, flags)
        if new != text:
            conf.write_text(new)

    def limits(self, name: AgentName) -> Limits:
        """The agent's limits: its applied agent.json's, the defaults where it sets none."""
        d = self.default_limits
        return self.paths.load_applied(name).limits(d.memory_mb, d.pids)

    def _apply_limits(self, name: AgentName) -> Limits:
        limits = self.limits(name)
        self._run(argv.set_limits_argv(name, limits.memory_mb, limits.pids), QUERY_SECONDS)
        return limits

    def _config_hash(self, name: AgentName) -> str:
        """Hash of the files the container is built from."""
        applied = self.paths.applied(name)
        h = hashlib.sha256()
        for f in sorted(applied.rglob("*")):
            rel = f.relative_to(applied)
            if f.is_file() and rel.name not in _NOT_CONFIG and not any(p.startswith(".") for p in rel.parts):
                h.update(str(rel).encode() + b"\0" + f.read_bytes() + b"\0")
        return h.hexdigest()

    def _built(self, name: AgentName) -> None:
        (self.paths.applied(name) / BUILT_STAMP).write_text(self._config_hash(name) + "\n")

    def _up_to_date(self, name: AgentName) -> bool:
        try:
            return (self.paths.applied(name) / BUILT_STAMP).read_text().strip() == self._config_hash(name)
        except OSError:
            return False

    def _clear_exit_record(self, name: AgentName) -> None:
        (self.paths.state(name) / EXIT_RECORD).unlink(missing_ok=True)

    def _exit_record(self, name: AgentName) -> str | None:
        try:
            return (self.paths.state(name) / EXIT_RECORD).read_text()
        except OSError:
            return None

    def _exit_status(self, name: AgentName) -> int | None:
        record = self._exit_record(name)
        return None if record is None else parse_exit_record(record)

    def _how_it_ended(self, name: AgentName) -> tuple[int | None, str | None]:
        """The harness's returncode (None: no record) and the reason (exit_reason)."""
        record = self._exit_record(name)
        try:
            unit_result = argv.parse_show(self._run(argv.unit_result_argv(name), QUERY_SECONDS)).get("Result")
        except BackendFailed:
            unit_result = None  # logged by run_command; the record alone decides
        return (None if record is None else parse_exit_record(record)), exit_reason(record, unit_result)

    # --- verbs ----------------------------------------------------------------
    def create(self, name: AgentName, driver: str) -> None:
        """Generate the agent's flake and create its container (not started)."""
        c = container_name(name)
        if self.exists(name):
            raise Conflict(f"container {c} for {name} already exists")
        for other in self.paths.agents.iterdir() if self.paths.agents.exists() else ():
            # Only agents' dirs: an --agents-dir may hold lost+found and its .hive-state.
            if other.name != name and is_valid_name(other.name) and container_name(AgentName(other.name)) == c:
                raise Conflict(f"agents {name} and {other.name} map to the same container name {c}")
        self._agent_dirs(name)
        applied = self.write_flake(name, driver)
        self._run(argv.create_argv(name, applied), BUILD_SECONDS)
        self._bind_into_conf(name)
        self._built(name)
        _log.info("container.created", agent=name, container=c)

    def start(self, name: AgentName, driver: str, on_exit: ExitCallback) -> NixosHandle:
        """Create the container if it does not exist yet (rebuild it if its config
        changed since the last build), set its limits, start it and watch it.
        ``on_exit(returncode, reason)`` runs on the watcher thread when the
        machine ends unasked (reason "out of memory" after an OOM kill, else None)."""
        if not self.exists(name):
            self.create(name, driver)
        else:
            self.write_flake(name, driver)
            if not self._up_to_date(name):
                self._update(name)
        self._bind_into_conf(name)
        limits = self._apply_limits(name)
        self._clear_exit_record(name)
        self._run(argv.start_argv(name), LIFECYCLE_SECONDS)
        handle = NixosHandle(name, container_name(name), on_exit)
        self._watchers.watch(handle)
        _log.info("container.start", agent=name, container=handle.container, memory_mb=limits.memory_mb,
                  pids=limits.pids)
        return handle

    def adopt(self, name: AgentName, driver: str, on_exit: ExitCallback) -> NixosHandle | None:
        """At boot: a container still running (the daemon stopped with its agents kept,
        or crashed; containers are systemd's units, not the daemon's children) is
        taken over as it runs: watched again, nothing started. None when machined
        does not know it as running (then it is started)."""
        show = show_machine(name, QUERY_SECONDS)
        if show is None:
            return None  # "No machine …" (or machined unreachable: a start says what is wrong)
        if show.get("State") != "running":
            _log.info("container.not_adopted", agent=name, state=show.get("State"))
            return None
        leader = show.get("Leader", "")
        handle = NixosHandle(name, container_name(name), on_exit, pid=int(leader) if leader.isdigit() else None)
        self._watchers.watch(handle)
        _log.info("container.adopted", agent=name, container=handle.container, pid=handle.pid)
        return handle

    def release(self, handle: NixosHandle) -> None:
        """Stop watching it; the container runs on for the next daemon to adopt."""
        handle.stopped.set()
        _log.info("container.released", agent=handle.name, container=handle.container)

    def stop(self, handle: NixosHandle, timeout: float = 5.0) -> int:
        """Stop the container; the harness's exit status. systemd's own stop timeout
        applies; ``timeout`` <= 0 (kill) terminates the machine at once instead."""
        handle.stopped.set()
        if timeout <= 0:
            self._run(argv.terminate_argv(handle.name), LIFECYCLE_SECONDS)
            _log.info("container.terminated", agent=handle.name)
            return -signal.SIGKILL  # no ExecStopPost runs: the machine is killed whole
        self._run(argv.stop_argv(handle.name), LIFECYCLE_SECONDS)
        rc = self._exit_status(handle.name)
        _log.info("container.stopped", agent=handle.name, returncode=rc)
        return 0 if rc is None else rc

    def restart(self, handle: NixosHandle) -> NixosHandle:
        """Restart the container; the new handle reports to the same ``on_exit``."""
        handle.stopped.set()
        self._clear_exit_record(handle.name)
        self._run(argv.restart_argv(handle.name), 2 * LIFECYCLE_SECONDS)
        new = NixosHandle(handle.name, handle.container, handle.on_exit)
        self._watchers.watch(new)
        _log.info("container.restarted", agent=handle.name)
        return new

    def rebuild(self, name: AgentName, driver: str, handle: NixosHandle | None = None) -> NixosHandle | None:
        """Regenerate the flake and rebuild the container; restart it (with the
        limits of the applied config, which may have changed) if it runs."""
        if not self.exists(name):
            raise Conflict(f"container {container_name(name)} for {name} does not exist; start it first")
        self.write_flake(name, driver)
        self._update(name)
        if handle is None:
            return None  # the next start sets the limits
        self._apply_limits(name)
        return self.restart(handle)

    def _update(self, name: AgentName) -> None:
        self._run(argv.update_argv(name, self.paths.applied(name)), BUILD_SECONDS)
        self._bind_into_conf(name)
        self._built(name)
        _log.info("container.rebuilt", agent=name)

    def destroy(self, name: AgentName, purge: bool = False, handle: NixosHandle | None = None) -> None:
        """Destroy the container (its root and profile go); ``purge`` also removes
        ``agents/<name>`` and ``applied/<name>``, which a plain destroy keeps."""
        if handle is not None:
            handle.stopped.set()
        self._run(argv.destroy_argv(name), LIFECYCLE_SECONDS)
        if purge:
            for d in (self.paths.agent(name), self.paths.applied(name)):
                if d.exists():
                    shutil.rmtree(d)
        _log.info("container.destroyed", agent=name, purge=purge)

    def journal(self, name: AgentName, unit: str, lines: int) -> str:
        return self._run(argv.journal_argv(name, unit, lines), QUERY_SECONDS)

    def log_path(self, name: AgentName) -> Path:
        # The harness logs to the container's journal; see journal().
        return self.paths.harness_log(name)

    def close(self) -> None:
        """At daemon stop: stop watching. The containers run on; they are systemd's."""
        self._watchers.close()

    def web_port(self, name: AgentName) -> int | None:
        """The agent's sticky port (F20), which the daemon relays to ``<state>/web.sock``."""
        return read_port_file(self.paths.agent(name) / "port")
