"""The `claude` driver (F26): each turn runs the Claude Code CLI on the
agent's conversation, with the hyperhive MCP tools wired in.

One process per turn (``claude -p --resume <session>``), not one long-lived
``--input-format stream-json`` process, because:
- cancel is exact: signal the turn's process group and everything it started
  (the CLI, its `hive mcp`) is gone; the next turn resumes from the session
  file on disk. A long-lived process would need the CLI's interrupt protocol
  and a way to tell "interrupted" from "wedged".
- a crash or a non-zero exit costs one turn, reported as an error event; the
  next message starts a fresh process, so the agent never sticks.
- `/compact` runs as a turn of its own on the resumed session (verified with
  CLI 2.1.197: it streams ``status: compacting`` then ``compact_boundary``).
- an idle agent holds no CLI process: a swarm of mostly-waiting agents costs
  nothing, and a turn slot (F44) maps onto a process's lifetime.
The price is the CLI's start-up per turn: measured ~0.8 s bare, ~1.8 s with
the MCP server, small beside a model's own latency.

The session id lives in ``<state>/claude-session``; HOME is the state dir,
so the CLI's transcripts and credentials (``.claude/``) live there too. The
working dir is the agent's workspace when it has one (else the state dir),
the same for every turn so ``--resume`` finds the transcript.

Permissions (issue 14): the mode comes from agent.json's ``permissions`` and
whether the harness is sandboxed (`claude_cmdline.permission_mode`: never
every tool unsandboxed). In "ask" mode each turn first asks the daemon which
tools the operator granted "from now on" (the ``grants`` op) for the system
prompt; they are not passed as allowed tools: every call not in
``allowed_tools`` goes to the daemon's ``permission`` op, which allows a
granted tool at once, so a grant or a revoke holds from the next call, even
mid-turn.
The binary is ``$HYPERHIVE_CLAUDE`` or ``claude`` on PATH.

The pure pieces are apart: the command line, environment and MCP config in
`claude_cmdline`, the system prompt and the framing of what others wrote in
`claude_prompt` (whose docstring says why framing is escaping).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import hyperhive.logs as logs
from hyperhive.errors import Conflict
from hyperhive.harness.claude_cmdline import (
    DEFAULT_ALLOWED_TOOLS,
    claude_argv,
    claude_env,
    has_credentials,
    mcp_config,
    permission_args,
)
from hyperhive.harness.claude_prompt import Whereabouts, format_prompt, system_prompt
from hyperhive.harness.driver import Emit
from hyperhive.harness.stream_json import MalformedLine, parse_line
from hyperhive.settings import CLAUDE_BINARY, CLAUDE_SILENCE_SECONDS
from hyperhive.wire import InboxRow

__all__ = ["ClaudeDriver", "Grants"]

# The daemon's ``grants`` op, asked at turn start in "ask" mode: ``{"tools": [...], "ttl_seconds": n}``
# (the tools granted "from now on"; how long a permission question may wait for the operator).
Grants = Callable[[], Awaitable[Mapping[str, object]]]

_log = logs.get("hyperhive.harness.claude")


SESSION_FILE = "claude-session"
MCP_CONFIG_FILE = "claude-mcp.json"
LINE_LIMIT = 1 << 24  # one stream-json line (a big tool result) may be large
STDERR_KEEP = 4000
STOP_GRACE = 1.0  # SIGTERM → SIGKILL; cancel must finish within 2 s
# A CLI that prints nothing for this long is hung: its own tools time out well
# before (Bash: 10 min at most), so the turn is stopped with an error event.
SILENCE_SECONDS = CLAUDE_SILENCE_SECONDS.default
LOST_SESSION = "No conversation found"
QUESTION_SLACK = 60.0  # past the permission TTL before a silent CLI counts as hung
ASK_TOOL_TIMEOUT_MS = 8 * 86400 * 1000  # past the longest permission TTL: the daemon's answer always comes first


@dataclass
class _Run:
    returncode: int
    malformed: str | None
    cancelled: bool
    stderr: str
    silent: bool = False


class ClaudeDriver:
    """The `Driver` that runs Claude Code, one process per turn (see the module docstring)."""

    name = "claude"
    can_compact = True

    def __init__(self, me: str, socket_path: str, state_dir: Path,
                 allowed_tools: Sequence[str] = DEFAULT_ALLOWED_TOOLS,
                 env: Mapping[str, str] | None = None, where: Whereabouts | None = None,
                 grants: Grants | None = None) -> None:
        self.me = me
        self.socket_path = socket_path
        self.home = state_dir
        self.allowed_tools = tuple(allowed_tools)
        # The mode is decided (claude_cmdline.permission_mode) by whoever built `where`.
        self.where = where or Whereabouts(tools=self.allowed_tools)
        self.mode = self.where.mode
        self.cwd = self.where.workspace or state_dir
        self._grants = grants
        self.granted: tuple[str, ...] = ()
        parent = os.environ if env is None else env
        self.binary = CLAUDE_BINARY.read(parent)
        self.env = claude_env(parent, state_dir, sandboxed=self.where.sandboxed and self.mode == "sandbox")
        if self.mode == "ask":  # the prompt tool waits for the operator: up to the daemon's TTL (7 days at most)
            self.env["MCP_TOOL_TIMEOUT"] = str(ASK_TOOL_TIMEOUT_MS)
        self.session_file = state_dir / SESSION_FILE
        self.mcp_config_path = state_dir / MCP_CONFIG_FILE
        self.silence = CLAUDE_SILENCE_SECONDS.read(parent)
        self._proc: asyncio.subprocess.Process | None = None
        self._cancelled = False

    @property
    def session_id(self) -> str | None:
        try:
            sid = self.session_file.read_text().strip()
        except FileNotFoundError:
            return None
        return sid or None

    def _remember(self, sid: str) -> None:
        if sid != self.session_id:
            tmp = self.session_file.with_suffix(".tmp")
            tmp.write_text(sid + "\n")
            tmp.replace(self.session_file)

    def _forget(self) -> None:
        self.session_file.unlink(missing_ok=True)

    @property
    def needs_login(self) -> bool:
        return not has_credentials(self.home, self.env)

    async def open(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        if not self.cwd.is_dir():
            _log.warning("claude.no_workspace", workspace=str(self.cwd))
            self.cwd = self.home
        config = mcp_config(self.socket_path, permission_tool=self.mode == "ask")
        self.mcp_config_path.write_text(json.dumps(config, indent=2) + "\n")

    async def close(self) -> None:
        await self.cancel()

    async def turn(self, messages: list[InboxRow], emit: Emit) -> None:
        await self._turn(format_prompt(self.me, messages), emit)

    def compact_refusal(self) -> str | None:
        """Why `/compact` cannot run now, or None."""
        return None if self.session_id else "no conversation to compact yet"

    async def compact(self, emit: Emit) -> None:
        reason = self.compact_refusal()
        if reason:
            raise Conflict(reason)
        await self._turn("/compact", emit)

    async def _refresh_grants(self) -> None:
        if self.mode != "ask" or self._grants is None:
            return
        try:
            got = await self._grants()
        except Exception as exc:  # noqa: BLE001 - the permission op still allows granted tools
            _log.warning("claude.grants_unavailable", error=str(exc))
            return
        tools = got.get("tools")
        self.granted = tuple(t for t in tools if isinstance(t, str)) if isinstance(tools, list) else ()
        ttl = got.get("ttl_seconds")
        if isinstance(ttl, int | float):  # the CLI says nothing while a question waits: not a hang
            self.silence = max(self.silence, float(ttl) + QUESTION_SLACK)

    def argv(self) -> list[str]:
        """This turn's command line (the mode, the tools granted so far)."""
        tools = permission_args(self.mode, self.allowed_tools, self.granted)
        where = replace(self.where, tools=tuple(tools[-1].split(",")) if "--allowedTools" in tools else ())
        return claude_argv(self.binary, self.mcp_config_path, self.allowed_tools, self.session_id,
                           system_prompt(self.me, self.home, where), mode=self.mode, granted=self.granted)

    async def _turn(self, prompt: str, emit: Emit) -> None:
        await self._refresh_grants()
        resumed = self.session_id
        run = await self._run(prompt, emit)
        if resumed and not run.cancelled and run.returncode != 0 and LOST_SESSION in run.stderr:
            emit("error", error=f"conversation {resumed} is gone from {self.home}; starting a new one")
            self._forget()
            run = await self._run(prompt, emit)
        if run.cancelled:
            emit("cancelled")
        elif run.silent:
            emit("error", error=f"claude printed nothing for {self.silence:g} s; the turn was stopped")
        elif run.malformed is not None:
            emit("error", error=f"malformed stream-json line from claude: {run.malformed}")
        elif run.returncode != 0:
            emit("error", error=f"claude exited with status {run.returncode}", stderr=run.stderr)

    async def _run(self, prompt: str, emit: Emit) -> _Run:
        self._cancelled = False
        argv = self.argv()
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, cwd=self.cwd, env=self.env,
                start_new_session=True, limit=LINE_LIMIT,
            )
        except OSError as exc:
            return _Run(127, None, False, f"cannot run {self.binary}: {exc}")
        self._proc = proc
        _log.info("claude.start", pid=proc.pid, resume=self.session_id, mode=self.mode)
        assert proc.stdin and proc.stdout and proc.stderr
        stderr = asyncio.create_task(_tail(proc.stderr))
        with contextlib.suppress(ConnectionError):
            proc.stdin.write(prompt.encode())
            await proc.stdin.drain()
        proc.stdin.close()
        malformed: str | None = None
        eof = silent = False
        try:
            malformed = await self._read(proc.stdout, emit)
            eof = malformed is None
        except TimeoutError:
            silent = True
        finally:
            if not eof:  # a malformed line, or the harness is stopping: end the turn here
                await _stop(proc)
            rc = await proc.wait()
            _killpg(proc.pid, signal.SIGKILL)  # anything it left behind in its group
            self._proc = None
        err = await stderr
        _log.info("claude.exit", pid=proc.pid, returncode=rc, cancelled=self._cancelled)
        return _Run(rc, malformed, self._cancelled, err, silent)

    async def _read(self, stdout: asyncio.StreamReader, emit: Emit) -> str | None:
        """Emit events until EOF; returns the problem with a malformed line, if one came."""
        while True:
            try:
                async with asyncio.timeout(self.silence):  # TimeoutError: the CLI is hung
                    line = await stdout.readline()
            except ValueError:
                return f"a line over {LINE_LIMIT} bytes"
            if not line:
                return None
            try:
                parsed = parse_line(line)
            except MalformedLine as exc:
                return str(exc)
            if parsed.session_id:
                self._remember(parsed.session_id)
            for kind, data in parsed.events:
                emit(kind, **data)

    async def cancel(self) -> bool:
        """Stop the running turn's process group; True if one was running."""
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return False
        self._cancelled = True
        await _stop(proc)
        return True


async def _tail(stream: asyncio.StreamReader) -> str:
    buf = b""
    while chunk := await stream.read(1 << 16):
        buf = (buf + chunk)[-STDERR_KEEP:]
    return buf.decode("utf-8", errors="replace").strip()


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


async def _stop(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM the group, SIGKILL it after STOP_GRACE."""
    _killpg(proc.pid, signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), STOP_GRACE)
    except TimeoutError:
        _killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
