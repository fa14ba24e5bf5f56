"""The built-in offline driver: a hive that works with no model account.

It answers each message with a reply to its sender that quotes it, obeys a
plain ``send <agent> <text>``, and, when the operator or the manager says
``run <shell command>``, runs the command in its workspace and replies with
the exit status and the first 4 KB of output: offline demos and the sandbox
attack tests get a real agent with a real shell. It acts through its MCP
tools, over a real MCP client session to `hive mcp`, the same path Claude
Code takes.

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
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

import hyperhive.logs as logs
from hyperhive.names import MANAGER, OPERATOR, SYSTEM
from hyperhive.wire import InboxRow

__all__ = [
    "OUTPUT_MAX",
    "RUN_TIMEOUT",
    "TRUNCATED",
    "Action",
    "BuiltinDriver",
    "RunResult",
    "plan",
    "run_output",
    "run_reply",
    "run_shell",
    "run_status",
]

_log = logs.get("hyperhive.harness")

REPLY_MARK = "[builtin reply from "
TOOL_SEND = "mcp__hyperhive__send"  # the name Claude Code gives the same tool
TOOL_BASH = "Bash"  # Claude Code's shell tool: the agent's page shows a run like one of its calls
QUOTE_MAX = 200
RUN_TIMEOUT = 300.0  # seconds a `run` may take before its group is killed
OUTPUT_MAX = 4096  # bytes of combined stdout+stderr kept for the reply
TRUNCATED = "\n[… output truncated]"
REAP_GRACE = 2.0  # a SIGKILLed group gets this long to be gone (and its pipe to close)
POLL = 0.02  # exit polling interval where pidfd_open is missing
READ_CHUNK = 1 << 16
RUNNERS = frozenset({OPERATOR, MANAGER})  # who may make an agent run commands
REFUSED_SENDER = "run refused: only the operator or the manager may run commands here"
REFUSED_UNSANDBOXED = "run refused: this agent is not sandboxed"
REFUSED_UNVERIFIED = "run refused: a note posted to the web UI is not verified as the operator's"
_RUN = re.compile(r"run\s+")


@dataclass(frozen=True)
class Action:
    """One thing to do: send ``body`` to ``to``, or (``command`` set) run the
    command and send its outcome to ``to``."""

    to: str
    body: str
    then_confirm_to: str | None = None  # whom to tell how the send went
    command: str | None = None


def _quote(body: str) -> str:
    one_line = " ".join(body.split())
    return one_line if len(one_line) <= QUOTE_MAX else one_line[: QUOTE_MAX - 1] + "…"


def _command(body: str) -> str | None:
    """The command of a ``run <command>`` body (everything after the word and
    its whitespace, verbatim, newlines included); None when it is no run."""
    m = _RUN.match(body)
    if m is None or m.end() == len(body):  # not a run, or `run` with nothing to run
        return None
    return body[m.end():]


def plan(me: str, msg: InboxRow, shell_allowed: bool = False) -> list[Action]:
    """What the builtin driver does with one message (pure).

    Never answers `system` (kicks, helper events) nor another builtin reply,
    so two builtin agents cannot ping-pong forever. A ``run`` is obeyed only
    from the operator or the manager, and only when the harness is sandboxed
    (``shell_allowed``): anyone else gets a refusal, as a plain reply.
    """
    if msg.from_ == SYSTEM or msg.body.startswith(REPLY_MARK):
        return []
    mark = f"{REPLY_MARK}{me}]"
    command = _command(msg.body)
    if command is not None:
        if msg.from_ not in RUNNERS:
            return [Action(to=msg.from_, body=f"{mark} {REFUSED_SENDER}")]
        if getattr(msg, "verified", None) is False:  # a web UI note (turns.Note) anyone local could post
            return [Action(to=msg.from_, body=f"{mark} {REFUSED_UNVERIFIED}")]
        if not shell_allowed:
            return [Action(to=msg.from_, body=f"{mark} {REFUSED_UNSANDBOXED}")]
        return [Action(to=msg.from_, body="", command=command)]
    words = msg.body.split(None, 2)
    if len(words) == 3 and words[0] == "send":
        return [Action(to=words[1], body=words[2], then_confirm_to=msg.from_)]
    return [Action(to=msg.from_, body=f'{mark} you said: "{_quote(msg.body)}"')]


# --- running a command ---------------------------------------------------------


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


def run_reply(me: str, result: RunResult) -> str:
    return f"{REPLY_MARK}{me}] run: {run_status(result)}\n{run_output(result)}"


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


def _killpg(pgid: int) -> None:
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
    _killpg(proc.pid)  # the shell is not reaped yet: this id is still the group's
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


# --- the driver -------------------------------------------------------------------


class BuiltinDriver:
    name = "builtin"

    def __init__(self, me: str, socket_path: str, workspace: Path | None = None,
                 shell_allowed: bool = False, run_timeout: float = RUN_TIMEOUT) -> None:
        """``workspace`` is where commands run (None: the current directory);
        ``shell_allowed`` says the harness is sandboxed, without which `run`
        is refused."""
        self.me = me
        self.socket_path = socket_path
        self.workspace = workspace
        self.shell_allowed = shell_allowed
        self.run_timeout = run_timeout
        self._stack = AsyncExitStack()
        self.session: ClientSession | None = None
        self._calls = 0
        self._groups: set[int] = set()  # process groups of runs in progress

    async def open(self) -> None:
        params = StdioServerParameters(
            command=sys.executable, args=["-m", "hyperhive", "mcp", "--socket", self.socket_path],
        )
        read, write = await self._stack.enter_async_context(stdio_client(params))
        self.session = await self._stack.enter_async_context(ClientSession(read, write))
        await self.session.initialize()

    async def close(self) -> None:
        for pgid in list(self._groups):  # a turn that outlived the loop's cancel: none may outlive us
            _killpg(pgid)
        await self._stack.aclose()

    async def turn(self, messages: list[InboxRow], emit: Any) -> None:
        assert self.session is not None
        for msg in messages:
            for action in plan(self.me, msg, self.shell_allowed):
                if action.command is not None:
                    await self._send(action.to, await self._run(action.command, emit), emit)
                    continue
                text, failed = await self._send(action.to, action.body, emit)
                if action.then_confirm_to and action.then_confirm_to != SYSTEM:
                    outcome = "could not send: " + text if failed else f"sent to {action.to}"
                    body = f"{REPLY_MARK}{self.me}] {outcome}"
                    await self.session.call_tool("send", {"to": action.then_confirm_to, "body": body})
        emit("text", text=json.dumps({"handled": len(messages)}))

    def _use_id(self) -> str:
        self._calls += 1
        return f"builtin_{self._calls}"

    async def _send(self, to: str, body: str, emit: Any) -> tuple[str, bool]:
        """Send through the MCP tool, recorded with the same event shapes as the
        claude driver's, so the agent's page shows them alike."""
        assert self.session is not None
        use_id = self._use_id()
        args = {"to": to, "body": body}
        emit("tool_use", id=use_id, name=TOOL_SEND, input=args)
        result = await self.session.call_tool("send", args)
        text = "".join(getattr(c, "text", "") for c in result.content)
        emit("tool_result", tool_use_id=use_id, content=text, is_error=bool(result.is_error))
        return text, bool(result.is_error)

    async def _run(self, command: str, emit: Any) -> str:
        """Run one command as a Bash tool call; the reply body to send back."""
        use_id = self._use_id()
        emit("tool_use", id=use_id, name=TOOL_BASH, input={"command": command})
        pids: list[int] = []

        def started(pid: int) -> None:
            pids.append(pid)
            self._groups.add(pid)

        try:
            result = await run_shell(command, self.workspace, self.run_timeout, started=started)
        except OSError as exc:  # sh missing, workspace gone
            emit("tool_result", tool_use_id=use_id, content=f"could not start: {exc}", is_error=True)
            return f"{REPLY_MARK}{self.me}] run: could not start: {exc}"
        except asyncio.CancelledError:
            emit("tool_result", tool_use_id=use_id, content="cancelled: the command's process group was killed",
                 is_error=True)
            raise
        finally:
            self._groups.difference_update(pids)
        _log.info("builtin.run", status=run_status(result), output_bytes=len(result.output),
                  truncated=result.truncated)
        emit("tool_result", tool_use_id=use_id, content=f"{run_status(result)}\n{run_output(result)}",
             is_error=result.returncode != 0)
        return run_reply(self.me, result)
