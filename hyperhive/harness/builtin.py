"""The built-in offline driver: a hive that works with no model account.

It answers each message with a reply to its sender that quotes it, obeys a
plain ``send <agent> <text>``, and, when the operator or the manager says
``run <shell command>``, runs the command in its workspace and replies with
the exit status and the first 4 KB of output: offline demos and the sandbox
attack tests get a real agent with a real shell. It acts through its MCP
tools, over an MCP session to `hive mcp`, the same path Claude Code takes
(`mcp_lite`: JSON-RPC lines, no ``mcp`` package to import at the harness's
start; any session with ``call_tool`` will do, the tests give the SDK's).

Running a command, and why its process group never outlives it, is
`builtin_shell`.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import hyperhive.logs as logs
from hyperhive.errors import Conflict
from hyperhive.harness.builtin_shell import (
    OUTPUT_MAX,
    RUN_TIMEOUT,
    TRUNCATED,
    RunResult,
    kill_group,
    run_output,
    run_shell,
    run_status,
)
from hyperhive.harness.driver import Emit
from hyperhive.harness.mcp_lite import LiteSession
from hyperhive.names import MANAGER, OPERATOR, SYSTEM
from hyperhive.wire import InboxRow

# The run_* names and their constants live in builtin_shell; re-exported for older importers.
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
class ToolSession(Protocol):
    """What the driver needs of an MCP session (``mcp_lite.LiteSession``, or the SDK's ``ClientSession``)."""

    async def call_tool(self, name: str, arguments: dict[str, Any], /) -> Any: ...


TOOL_SEND = "mcp__hyperhive__send"  # the name Claude Code gives the same tool
TOOL_BASH = "Bash"  # Claude Code's shell tool: the agent's page shows a run like one of its calls
QUOTE_MAX = 200
RUNNERS = frozenset({OPERATOR, MANAGER})  # who may make an agent run commands
REFUSED_SENDER = "run refused: only the operator or the manager may run commands here"
REFUSED_UNSANDBOXED = "run refused: this agent is not sandboxed"
REFUSED_UNVERIFIED = "run refused: a note posted to the web UI is not verified as the operator's"
NO_CONVERSATION = "the builtin driver keeps no conversation to compact"
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


def run_reply(me: str, result: RunResult) -> str:
    return f"{REPLY_MARK}{me}] run: {run_status(result)}\n{run_output(result)}"


# --- the driver -------------------------------------------------------------------


class BuiltinDriver:
    """A `Driver` with no model and no conversation: nothing to log in to or compact."""

    name = "builtin"
    needs_login = False
    can_compact = False

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
        self._own: LiteSession | None = None
        self.session: ToolSession | None = None
        self._calls = 0
        self._groups: set[int] = set()  # process groups of runs in progress

    async def open(self) -> None:
        self._own = LiteSession(self.socket_path)
        await self._own.open()
        self.session = self._own

    async def close(self) -> None:
        for pgid in list(self._groups):  # a turn that outlived the loop's cancel: none may outlive us
            kill_group(pgid)
        if self._own is not None:
            await self._own.close()

    def compact_refusal(self) -> str | None:
        return NO_CONVERSATION

    async def compact(self, emit: Emit) -> None:
        raise Conflict(NO_CONVERSATION)

    async def cancel(self) -> bool:
        """No cancel of its own: the turn loop cancels the turn's task, and `run_shell`
        kills a running command's group on the way out."""
        return False

    async def turn(self, messages: list[InboxRow], emit: Emit) -> None:
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

    async def _send(self, to: str, body: str, emit: Emit) -> tuple[str, bool]:
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

    async def _run(self, command: str, emit: Emit) -> str:
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
