"""`hive mcp --socket PATH`: the agent's MCP tools on stdio, as a pipe (issue 17).

The daemon serves the tools itself on ``mcp.sock``, beside the agent's socket
``PATH`` (``web/rpc/mcp_sockets``); this copies lines between stdio and that
socket. It imports nothing but the standard library, so it starts in a few
tens of milliseconds, where an MCP server of its own cost a turn about 1.3 s
and 57 MB (`hyperhive/__main__.py` runs it before importing anything else).

What it adds to the lines:
- a first line of options for the daemon: ``{"hyperhive": {"permission_tool":
  true}}`` when ``$HYPERHIVE_MCP_PERMISSION_TOOL`` is 1 (an "ask" mode CLI);
- a key in every ``tools/call``'s ``params._meta`` (``KEY_META``): a send is
  stored once however often it is sent.

A daemon restarting (issue 16): at the start it waits up to ``START_LIMIT``
seconds for the socket; when the connection is lost it reconnects (250 ms
doubling to 5 s, for as long as it runs, until the socket's directory is
gone), says the initialize again (its reply is not passed on), and sends again
what had no answer yet where that is harmless: any request that is not a tool
call, and the calls of ``REISSUE`` tools (``send`` with its key). Any other
call in flight is answered with an error saying its outcome is unknown.
"""

from __future__ import annotations

import json
import os
import selectors
import socket
import sys
import time
from collections import deque
from typing import Any

__all__ = ["KEY_META", "PIPE_FILE", "REISSUE", "START_LIMIT", "Pipe", "main", "pipe_argv"]

KEY_META = "hyperhive/idempotency_key"  # as web/rpc/mcp_tools.KEY_META
PERMISSION_TOOL_ENV = "HYPERHIVE_MCP_PERMISSION_TOOL"  # as harness/claude_cmdline's
REISSUE = frozenset({"recv", "recent", "send", "permission", "usage"})
START_LIMIT = 120.0
FIRST_DELAY, MAX_DELAY = 0.25, 5.0
_REPLAY_ID = "hyperhive-pipe-initialize"


PIPE_FILE = os.path.abspath(__file__)


def pipe_argv(python: str, agent_socket: str) -> list[str]:
    """The pipe's command line: this file run by path with ``-I -S`` (no site, no
    package import: ~12 ms to start where ``-m hyperhive mcp`` takes ~40). ``-I``
    also keeps the cwd (the agent's workspace) and this file's dir off sys.path."""
    return [python, "-I", "-S", PIPE_FILE, "--socket", agent_socket]


def mcp_socket_of(agent_socket: str) -> str:
    return os.path.join(os.path.dirname(agent_socket), "mcp.sock")


def socket_dir_gone(path: str) -> bool:
    """Whether the directory of the socket ``path`` was deleted (missing, or unlinked
    while a bind mount still shows it): the agent is gone (harness/reconnect's too)."""
    try:
        return os.stat(os.path.dirname(path) or ".").st_nlink == 0
    except FileNotFoundError:
        return True
    except OSError:
        return False


def _say(text: str) -> None:
    sys.stderr.write(f"hive mcp: {text}\n")
    sys.stderr.flush()


def reissuable(msg: dict[str, Any]) -> bool:
    """Whether a request whose answer was lost may go out again (pure)."""
    if msg.get("method") != "tools/call":
        return True
    params = msg.get("params")
    return isinstance(params, dict) and params.get("name") in REISSUE


def keyed(msg: dict[str, Any]) -> dict[str, Any]:
    """A ``tools/call`` with a key of its own in ``params._meta`` (pure but for the key)."""
    params = msg.get("params")
    if msg.get("method") == "tools/call" and isinstance(params, dict):
        meta = params.get("_meta")
        meta = dict(meta) if isinstance(meta, dict) else {}
        meta.setdefault(KEY_META, f"mcp-{time.time_ns():016x}-{os.urandom(8).hex()}")  # as secrets.token_hex
        return {**msg, "params": {**params, "_meta": meta}}
    return msg


def lost_answer(msg: dict[str, Any]) -> bytes:
    """The answer to a call in flight when the daemon went away: its outcome is unknown."""
    text = ("connection_lost: the connection to the hyperhive daemon was lost during this call; "
            "whether it took effect is unknown")
    out = {"jsonrpc": "2.0", "id": msg.get("id"), "result": {"content": [{"type": "text", "text": text}],
                                                            "isError": True}}
    return json.dumps(out).encode() + b"\n"


class Pipe:
    """stdin → the daemon, the daemon → stdout, with the bookkeeping of a reconnect.

    ``out`` holds the lines for the daemon not wholly written yet (``head`` bytes of
    the first are); a request is in ``pending`` from when its line is wholly
    written until its answer comes."""

    def __init__(self, path: str, permission_tool: bool, stdin: int = 0, stdout: int = 1) -> None:
        self.path = path
        self.stdin, self.stdout = stdin, stdout
        self.header = json.dumps({"hyperhive": {"permission_tool": permission_tool}}).encode() + b"\n"
        self.sock: socket.socket | None = None
        self.out: deque[tuple[bytes, dict[str, Any] | None]] = deque()  # (line, the request it is)
        self.head = 0
        self.initialize: dict[str, Any] | None = None
        self.initialized: bytes | None = None
        self.init_answered = False
        self.pending: dict[str, tuple[dict[str, Any], bytes]] = {}  # id → (request, its line)
        self._in = bytearray()
        self._back = bytearray()
        self.cli_closed = False

    # --- the lines of each side
    def from_cli(self, line: bytes) -> None:
        try:
            msg = json.loads(line)
        except ValueError:
            msg = None
        request = None
        if isinstance(msg, dict) and isinstance(msg.get("method"), str):
            if "id" in msg:
                request = keyed(msg)
                line = json.dumps(request, ensure_ascii=False).encode() + b"\n"
                if request["method"] == "initialize":
                    self.initialize, self.init_answered = request, False
            elif msg["method"] == "notifications/initialized":
                self.initialized = line
        self.out.append((line, request))

    def from_daemon(self, line: bytes) -> bytes | None:
        """The line for the CLI, or None (the reply to a replayed initialize)."""
        try:
            msg = json.loads(line)
        except ValueError:
            return line
        if isinstance(msg, dict) and "method" not in msg and "id" in msg:
            if msg["id"] == _REPLAY_ID:
                return None
            if self.initialize is not None and msg["id"] == self.initialize["id"]:
                self.init_answered = True
            self.pending.pop(json.dumps(msg["id"]), None)
        return line

    def written(self, line: bytes, request: dict[str, Any] | None) -> None:
        if request is not None and request["method"] != "initialize":
            self.pending[json.dumps(request["id"])] = (request, line)

    def resume(self) -> None:
        """After a reconnect: the options, the initialize again and what may go again
        first; the calls that may not are answered to the CLI as lost."""
        if self.head and self.out:  # a line cut off: wholly again, or in flight
            line, request = self.out.popleft()
            if request is None or request["method"] == "initialize":
                self.out.appendleft((line, request))
            else:
                self.written(line, request)
        self.head = 0
        first: list[tuple[bytes, dict[str, Any] | None]] = [(self.header, None)]
        if self.initialize is not None and self.init_answered:
            first.append((json.dumps({**self.initialize, "id": _REPLAY_ID}).encode() + b"\n", None))
            if self.initialized is not None:
                first.append((self.initialized, None))
        elif self.initialize is not None and not any(r is self.initialize for _, r in self.out):
            first.append((json.dumps(self.initialize).encode() + b"\n", self.initialize))
        lost = bytearray()
        for key, (msg, line) in list(self.pending.items()):
            del self.pending[key]
            if reissuable(msg):
                first.append((line, msg))
            else:
                lost += lost_answer(msg)
        self._write_cli(bytes(lost))
        self.out.extendleft(reversed(first))

    # --- the connection
    def connect(self, limit: float | None) -> bool:
        """Connect, retrying with backoff; False when ``limit`` passed or the socket's dir is gone."""
        end = None if limit is None else time.monotonic() + limit
        delay = FIRST_DELAY
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(self.path)
            except OSError as exc:
                sock.close()
                if socket_dir_gone(self.path) or (end is not None and time.monotonic() + delay > end):
                    _say(f"cannot reach the daemon at {self.path}: {exc}")
                    return False
                if not self._wait(delay):  # the CLI closed its end meanwhile: nothing to wait for
                    return False
                delay = min(delay * 2, MAX_DELAY)
                continue
            sock.setblocking(False)
            self.sock = sock
            return True

    def _wait(self, delay: float) -> bool:
        """Sleep ``delay``, taking in what the CLI writes meanwhile; False at its EOF."""
        end = time.monotonic() + delay
        with selectors.DefaultSelector() as sel:
            sel.register(self.stdin, selectors.EVENT_READ)
            while (left := end - time.monotonic()) > 0:
                if sel.select(left) and not self._read_cli():
                    self.cli_closed = True
                    return False
        return True

    def _write_cli(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self.stdout, view)
            view = view[n:]

    def _send(self) -> bool:
        """Write what the socket takes now; False when the connection is lost."""
        assert self.sock is not None
        while self.out:
            line, request = self.out[0]
            try:
                n = self.sock.send(line[self.head:])
            except BlockingIOError:
                return True
            except OSError:
                return False
            self.head += n
            if self.head < len(line):
                return True
            self.out.popleft()
            self.head = 0
            self.written(line, request)
        return True

    def run(self) -> int:
        if not self.connect(START_LIMIT):
            return 0 if self.cli_closed else 1
        self.out.append((self.header, None))
        sel = selectors.DefaultSelector()
        sel.register(self.stdin, selectors.EVENT_READ, "cli")
        stdin_open = True
        while True:
            assert self.sock is not None
            events = selectors.EVENT_READ | (selectors.EVENT_WRITE if self.out else 0)
            sel.register(self.sock, events, "daemon")
            ready = sel.select()
            sel.unregister(self.sock)
            lost = False
            for key, mask in ready:
                if key.data == "cli":
                    stdin_open = self._read_cli()
                    if not stdin_open:
                        sel.unregister(self.stdin)
                    continue
                if mask & selectors.EVENT_WRITE:
                    lost = not self._send()
                if mask & selectors.EVENT_READ and not lost:
                    lost = not self._read_daemon()
            if not stdin_open and not self.pending and not self.out:
                return 0
            if lost:
                self.sock.close()
                self.sock = None
                if not stdin_open:
                    return 0
                _say("the connection to the daemon was lost; reconnecting")
                if not self.connect(None):
                    return 0 if self.cli_closed else 1
                self._back.clear()
                self.resume()

    def _read_cli(self) -> bool:
        data = os.read(self.stdin, 1 << 16)
        if not data:
            return False
        self._in += data
        while (i := self._in.find(b"\n")) >= 0:
            line, self._in = bytes(self._in[:i + 1]), self._in[i + 1:]
            self.from_cli(line)
        return True

    def _read_daemon(self) -> bool:
        assert self.sock is not None
        try:
            data = self.sock.recv(1 << 16)
        except BlockingIOError:
            return True
        except OSError:
            return False
        if not data:
            return False
        self._back += data
        out = bytearray()
        while (i := self._back.find(b"\n")) >= 0:
            line, self._back = bytes(self._back[:i + 1]), self._back[i + 1:]
            passed = self.from_daemon(line)
            if passed is not None:
                out += passed
        self._write_cli(bytes(out))
        return True


def main(argv: list[str]) -> int:
    """``mcp --socket PATH`` (PATH: the agent's socket, run/hive.sock)."""
    if len(argv) != 3 or argv[0] != "mcp" or argv[1] != "--socket":
        _say("usage: hive mcp --socket PATH (the agent's socket, run/hive.sock)")
        return 2
    pipe = Pipe(mcp_socket_of(argv[2]), os.environ.get(PERMISSION_TOOL_ENV) == "1")
    try:
        return pipe.run()
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the CLI went away
        return 0


if __name__ == "__main__":  # run by path (pipe_argv)
    raise SystemExit(main(["mcp", *sys.argv[1:]]))
