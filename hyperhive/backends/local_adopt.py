"""What lets a harness outlive its daemon: the record the daemon keeps of it,
and the processes it watches, its own children or adopted ones.

``agents/<n>/harness.json`` (the daemon's dir: the agent cannot write it) is
written when a harness starts and removed when it ends or is stopped. It holds
the top process's pid (the launcher, exec'd into bwrap, or the harness
itself), that process's start time (field 22 of ``/proc/<pid>/stat``, clock
ticks since boot), the boot id, the agent's cgroup dirs, the sandbox flag, the
driver, its uid and the log relay's pid and start time. The next daemon adopts the
harness only when all of it still holds (`identify`): the boot is the same, a
process with that pid is alive and started at that tick, and it is in the
agent's cgroup(s). A pid reused by another process has another start time, so
it is never taken for a harness; the check runs after a pidfd pinned the
process, so it cannot be swapped in between.

`Proc` is one watched process: a child (``subprocess.Popen``) or an adopted
one (a pidfd: it is not our child, so its exit status is unknown and it is
reaped by whoever it was reparented to). Only its watcher thread waits on it
(`Proc.reap`); everyone else waits on `Proc.ended`.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hyperhive.logs as logs
from hyperhive.sandbox.log_relay import relay_argv

if TYPE_CHECKING:
    from hyperhive.sandbox.cgroups import AgentCgroup

__all__ = ["RECORD", "HarnessRecord", "Proc", "boot_id", "end_group", "end_left_running", "identify", "identify_relay",
           "read_record", "reap_later", "remove_record", "signal_group", "spawn", "start_time", "write_record"]

_log = logs.get("hyperhive.backend.local")

RECORD = "harness.json"  # in agents/<n>/
_RECORD_MAX = 1 << 14
_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def boot_id() -> str:
    try:
        return _BOOT_ID.read_text().strip()
    except OSError:
        return ""


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot; None when it is gone or a zombie."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    fields = text.rpartition(")")[2].split()  # after the comm, which may hold spaces and parens
    if len(fields) < 20 or fields[0] in ("Z", "X"):
        return None
    try:
        return int(fields[19])  # field 22; fields[0] is field 3
    except ValueError:
        return None


@dataclass(frozen=True)
class HarnessRecord:
    pid: int
    start_time: int
    boot_id: str
    cgroups: tuple[str, ...]  # the agent's cgroup dirs; () without cgroups
    sandboxed: bool
    driver: str
    started_at: float  # wall clock
    relay_pid: int | None = None
    relay_start_time: int | None = None
    uid: int | None = None  # the host uid it runs as

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "cgroups": list(self.cgroups)}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> HarnessRecord | None:
        """The record, or None for anything that is not one exactly."""
        try:
            raw = json.loads(text)
        except ValueError:
            return None
        if not isinstance(raw, dict):
            return None

        def num(key: str, kind: Any, optional: bool = False) -> Any:
            value = raw.get(key)
            if value is None and optional:
                return None
            if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
                raise ValueError(key)
            return value

        try:
            pid, ticks = num("pid", int), num("start_time", int)
            relay_pid, relay_ticks = num("relay_pid", int, True), num("relay_start_time", int, True)
            uid = num("uid", int, True)
            cgroups = raw.get("cgroups")
            if not isinstance(cgroups, list) or not all(isinstance(c, str) and c.startswith("/") for c in cgroups):
                return None
            if pid <= 1 or ticks < 0 or (relay_pid is not None and relay_pid <= 1):
                return None
            return cls(pid, ticks, num("boot_id", str), tuple(cgroups), num("sandboxed", bool),
                       num("driver", str), float(num("started_at", int | float)), relay_pid, relay_ticks, uid)
        except ValueError:
            return None


def write_record(path: Path, record: HarnessRecord) -> None:
    """Atomically: a temporary file beside it (never through a link), then rename."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, record.to_json().encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def read_record(path: Path) -> HarnessRecord | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        return HarnessRecord.from_json(os.read(fd, _RECORD_MAX).decode(errors="replace"))
    except OSError:
        return None
    finally:
        os.close(fd)


def remove_record(path: Path) -> None:
    path.unlink(missing_ok=True)


@dataclass
class Proc:
    """One watched process: ``popen`` for our child, ``pidfd`` for an adopted one."""

    pid: int
    popen: subprocess.Popen[bytes] | None = None
    pidfd: int | None = None
    returncode: int | None = None  # None until it ended, and for good when it was adopted
    ended: threading.Event = field(default_factory=threading.Event)

    @property
    def adopted(self) -> bool:
        return self.popen is None

    def reap(self, timeout: float | None = None) -> bool:
        """Wait until it ends, at most ``timeout`` seconds; True when it has. Only one
        thread may reap (its watcher); ``returncode`` is its status then (None when adopted)."""
        if self.popen is not None:
            try:
                self.returncode = self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                return False
        elif self.pidfd is not None:
            poll = select.poll()
            poll.register(self.pidfd, select.POLLIN)
            if not poll.poll(None if timeout is None else int(timeout * 1000)):
                return False
            os.close(self.pidfd)
            self.pidfd = None
        self.ended.set()
        return True

    def wait(self, timeout: float | None) -> bool:
        """True once it has ended (reaped by its watcher)."""
        return self.ended.wait(timeout)


def _pin(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except OSError:
        return None


def _in_cgroups(pid: int, dirs: Sequence[str]) -> bool:
    for d in dirs:
        try:
            listed = Path(d, "cgroup.procs").read_text().split()
        except OSError:
            return False
        if str(pid) not in listed:
            return False
    return True


def identify(record: HarnessRecord) -> Proc | str:
    """The recorded harness, pinned (a `Proc` holding a pidfd), or why it is not there:
    another boot, no such process, another start time (a reused pid), not in its cgroup."""
    if record.boot_id != boot_id():
        return "recorded during another boot"
    fd = _pin(record.pid)
    if fd is None:
        return f"pid {record.pid} is gone"
    ticks = start_time(record.pid)  # read after the pidfd pinned the process: it cannot be another now
    why = None
    if ticks is None:
        why = f"pid {record.pid} is gone"
    elif ticks != record.start_time:
        why = f"pid {record.pid} started at tick {ticks}, not {record.start_time}: another process"
    elif not _in_cgroups(record.pid, record.cgroups):
        why = f"pid {record.pid} is not in the agent's cgroup"
    if why is not None:
        os.close(fd)
        return why
    return Proc(record.pid, pidfd=fd)


def identify_relay(record: HarnessRecord) -> Proc | None:
    """The harness's log relay, pinned, when it is still the recorded process (else None)."""
    if record.relay_pid is None or record.relay_start_time is None:
        return None
    fd = _pin(record.relay_pid)
    if fd is None:
        return None
    if start_time(record.relay_pid) != record.relay_start_time:
        os.close(fd)
        return None
    return Proc(record.relay_pid, pidfd=fd)


# --- starting and ending -------------------------------------------------------------


def spawn(argv: Sequence[str], env: dict[str, str], log: Path, name: str) -> tuple[Proc, Proc]:
    """Start ``argv`` in a session of its own with its output piped to a log relay
    appending to ``log``: (the harness, the relay), both our children.

    Through a pipe, never the log file itself: a process of the agent's could take
    the harness's stdout (pidfd_getfd) and truncate or rewrite the log. The relay
    is a process of its own (the daemon's uid, its own session, outside the
    sandbox): it outlives this daemon, and ends when the harness's tree has.
    """
    read_end, write_end = os.pipe()
    try:
        relay_popen = subprocess.Popen(
            relay_argv(sys.executable, log), stdin=read_end, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, cwd="/", env={}, start_new_session=True, close_fds=True)
        relay = Proc(relay_popen.pid, popen=relay_popen)
        reap_later(relay, f"log-{name}")
        popen = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=write_end, stderr=write_end,
            cwd="/", env=env,  # never a dir the agent writes: python -m would import from it
            start_new_session=True, close_fds=True,
        )
    finally:  # the relay sees the end of file once the harness's tree is gone (or never started)
        os.close(read_end)
        os.close(write_end)
    return Proc(popen.pid, popen=popen), relay


def reap_later(proc: Proc, name: str) -> None:
    """A thread that reaps ``proc`` (a log relay: it ends once the harness's whole tree has)."""
    threading.Thread(target=proc.reap, name=f"reap-{name}", daemon=True).start()


def signal_group(pid: int, sig: int) -> bool:
    """Signal the process group ``pid`` leads; False when it is gone (or refused, logged)."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        _log.error("container.signal_refused", pid=pid, signal=sig)
        return False
    return True


def end_group(proc: Proc, cgroup: AgentCgroup | None) -> None:
    """End an identified (pinned, unwatched) harness's tree at once: its group, then its cgroup."""
    if signal_group(proc.pid, signal.SIGKILL) and not proc.reap(10.0):
        _log.error("container.left_running", pid=proc.pid)
    else:
        proc.reap(0)
    if cgroup is not None:
        cgroup.kill_all()


def end_left_running(agents: Path) -> list[int]:
    """Kill every harness a daemon left running under ``agents`` (``agents/<n>/harness.json``
    naming a live process of that boot and start time: never a reused pid). For a
    daemon's state dir with no daemon (a test's, a bench's): the pids ended."""
    ended = []
    for path in sorted(agents.glob(f"*/{RECORD}")) if agents.is_dir() else ():
        record = read_record(path)
        proc = identify(record) if record is not None else "no record"
        if isinstance(proc, Proc):
            end_group(proc, None)
            ended.append(proc.pid)
            remove_record(path)
    return ended
