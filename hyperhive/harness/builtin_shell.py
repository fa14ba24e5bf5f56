"""Running one shell command for the builtin driver's ``run`` (`run_shell`),
and telling how it went (`run_status`, `run_output`).

A command runs with ``sh -c`` in its own process group, inside the sandbox
the harness already is in (so it can do no more than the agent itself). The
group never outlives the run: it is SIGKILLed when the command's shell exits
(whatever it left running in the background goes with it, as in the claude
driver), when the time limit passes, and when the turn is cancelled or the
harness stops. The shell is reaped only after its group was killed, so the
group id cannot have been reused by then.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["OUTPUT_MAX", "RUN_TIMEOUT", "TRUNCATED", "RunResult", "kill_group", "run_output", "run_shell",
           "run_status"]

RUN_TIMEOUT = 300.0  # seconds a `run` may take before its group is killed
OUTPUT_MAX = 4096  # bytes of combined stdout+stderr kept for the reply
TRUNCATED = "\n[… output truncated]"
REAP_GRACE = 2.0  # a SIGKILLed group gets this long to be gone (and its pipe to close)
POLL = 0.02  # exit polling interval where pidfd_open is missing
READ_CHUNK = 1 << 16


@dataclass(frozen=True)
class RunResult:
    returncode: int | None  # as Popen says: negative = killed by that signal; None = timed out
    output: bytes  # the first OUTPUT_MAX bytes of stdout+stderr
    truncated: bool  # more came than ``output`` holds
    timeout: float


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def run_status(result: RunResult) -> str:
    """``exit N``, ``killed by SIGNAME`` or ``timed out after T s``."""
    if result.returncode is None:
        return f"timed out after {result.timeout:g} s"
    if result.returncode < 0:
        return f"killed by {_signal_name(-result.returncode)}"
    return f"exit {result.returncode}"


def run_output(result: RunResult) -> str:
    """The kept output as text: bytes that are no UTF-8 become U+FFFD, so the
    reply always encodes (no lone surrogates reach the wire)."""
    text = result.output.decode("utf-8", errors="replace")
    return text + TRUNCATED if result.truncated else text


class _Capture:
    """Keeps the first ``limit`` bytes read from a pipe and drains the rest
    (a command blocked on a full pipe would never end)."""

    def __init__(self, fd: int, limit: int) -> None:
        self.fd = fd
        self.limit = limit
        self.kept = bytearray()
        self.total = 0
        self.eof = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        os.set_blocking(fd, False)
        self._loop.add_reader(fd, self._readable)

    def _readable(self) -> None:
        try:
            chunk = os.read(self.fd, READ_CHUNK)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self.close()
            return
        room = self.limit - len(self.kept)
        if room > 0:
            self.kept += chunk[:room]
        self.total += len(chunk)

    def close(self) -> None:
        if not self.eof.is_set():
            self._loop.remove_reader(self.fd)
            os.close(self.fd)
            self.eof.set()


async def _readable(fd: int) -> None:
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(fd, wake)
    try:
        await ready
    finally:
        loop.remove_reader(fd)


async def _exited(pid: int) -> None:
    """Wait until our child ``pid`` has exited, without reaping it: while it is
    a zombie its pid, the group's id, cannot go to another process."""
    try:
        pidfd: int | None = os.pidfd_open(pid)
    except (AttributeError, OSError):  # no pidfd (old kernel): poll
        pidfd = None
    try:
        while os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT | os.WNOHANG) is None:
            if pidfd is None:
                await asyncio.sleep(POLL)
            else:
                await _readable(pidfd)  # a pidfd turns readable when the process exits
    except ChildProcessError:  # already reaped: it has exited all the more
        pass
    finally:
        if pidfd is not None:
            os.close(pidfd)


def kill_group(pgid: int) -> None:
    """SIGKILL process group ``pgid``; one already gone (or not ours to signal) is no error."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _stat_fields(stat: str) -> list[str]:
    """The fields of a /proc/<pid>/stat line after ``pid (comm)`` (comm may hold anything)."""
    return stat[stat.rindex(")") + 2:].split()


def _group_alive(pgid: int) -> bool:
    """Whether a live member is left in group ``pgid``. Zombies are not: they are
    dead, only not yet reaped by init (which may take its time)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a member that changed its credentials: still there
        pass
    try:
        entries = [e for e in os.listdir("/proc") if e.isdigit()]
    except OSError:  # no procfs: trust the kill
        return True
    for entry in entries:
        try:
            with open(f"/proc/{entry}/stat") as f:
                state, _ppid, pgrp = _stat_fields(f.read())[:3]
        except (OSError, ValueError):  # gone meanwhile, or unreadable
            continue
        if int(pgrp) == pgid and state not in ("Z", "X"):
            return True
    return False


async def _end_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the command's whole group, reap its shell, and wait (bounded)
    until no member is left. The kill comes first and synchronously, so even a
    second cancel while we wait cannot leave the group running."""
    kill_group(proc.pid)  # the shell is not reaped yet: this id is still the group's
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(_exited(proc.pid), REAP_GRACE)
    proc.poll()  # reap the shell (a shell that would not die is left to Popen's own reaping)
    end = time.monotonic() + REAP_GRACE
    while _group_alive(proc.pid) and time.monotonic() < end:
        await asyncio.sleep(POLL)


async def run_shell(command: str, cwd: Path | None, timeout: float, limit: int = OUTPUT_MAX,
                    started: Callable[[int], None] | None = None) -> RunResult:
    """Run ``sh -c command`` in ``cwd`` in a new session, stdin /dev/null,
    stdout and stderr into one pipe. Cancelling this coroutine kills the group
    and waits for it before the CancelledError goes on. ``started(pid)``, when
    given, is called once the shell runs (the driver keeps the live groups)."""
    read_fd, write_fd = os.pipe()
    try:
        proc = subprocess.Popen(  # not asyncio's: we reap it ourselves, after killing its group
            ["sh", "-c", command], cwd=cwd, stdin=subprocess.DEVNULL, stdout=write_fd, stderr=write_fd,
            start_new_session=True, close_fds=True,
        )
    except BaseException:
        os.close(read_fd)
        raise
    finally:
        os.close(write_fd)
    capture = _Capture(read_fd, limit)
    if started is not None:
        started(proc.pid)
    timed_out = False
    try:
        try:
            await asyncio.wait_for(_exited(proc.pid), timeout)
        except TimeoutError:
            timed_out = True
        finally:  # done, timed out or cancelled: the group goes
            await _end_group(proc)
        with contextlib.suppress(TimeoutError):  # the group is gone; what it wrote is still in the pipe
            await asyncio.wait_for(capture.eof.wait(), REAP_GRACE)
    finally:
        capture.close()  # an escapee (setsid) may hold the pipe: stop reading it
    return RunResult(None if timed_out else proc.returncode, bytes(capture.kept), capture.total > limit, timeout)
