"""`hive mcp` as a pipe (issue 17): its rules as pure functions, and the real
process between a pipe for stdio and a scripted daemon socket that goes away
mid-call (what the daemon's restart looks like to it)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from hyperhive.mcp_pipe import KEY_META, Pipe, keyed, lost_answer, reissuable

INIT = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-06-18"}}
INITIALIZED = {"jsonrpc": "2.0", "method": "notifications/initialized"}


def call(req_id: int, tool: str, **args: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": req_id, "method": "tools/call", "params": {"name": tool, "arguments": args}}


def line(msg: dict[str, Any]) -> bytes:
    return json.dumps(msg).encode() + b"\n"


def test_every_tool_call_gets_a_key_of_its_own_and_nothing_else_does() -> None:
    a, b = keyed(call(1, "send", to="b", body="x")), keyed(call(1, "send", to="b", body="x"))
    ka, kb = a["params"]["_meta"][KEY_META], b["params"]["_meta"][KEY_META]
    assert ka.startswith("mcp-") and kb.startswith("mcp-") and ka != kb
    assert a["params"]["arguments"] == {"to": "b", "body": "x"}
    kept = keyed({**call(2, "recv"), "params": {"name": "recv", "_meta": {"progressToken": 7, KEY_META: "given"}}})
    assert kept["params"]["_meta"] == {"progressToken": 7, KEY_META: "given"}
    listing = {"jsonrpc": "2.0", "id": 3, "method": "tools/list"}
    assert keyed(INIT) == INIT and keyed(listing) == listing


@pytest.mark.parametrize(("msg", "again"), [
    (call(1, "recv", wait_seconds=30), True), (call(1, "send", to="b", body="x"), True),
    (call(1, "recent"), True), (call(1, "permission"), True), (call(1, "usage"), True),
    (call(1, "ask_operator", question="q"), False), (call(1, "request_spawn", name="n"), False),
    (call(1, "kill", name="n"), False), (call(1, "propose_config"), False),
    ({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, True),
    ({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": "odd"}, False),
])
def test_what_goes_again_after_a_lost_daemon(msg: dict[str, Any], again: bool) -> None:
    assert reissuable(msg) is again


def test_a_call_that_may_not_go_again_is_answered_as_unknown() -> None:
    out = json.loads(lost_answer(call(7, "ask_operator")))
    assert out["id"] == 7 and out["result"]["isError"] is True
    assert out["result"]["content"][0]["text"].startswith("connection_lost:")


def test_resume_says_initialize_again_and_sorts_what_was_in_flight(tmp_path: Path) -> None:
    r, w = os.pipe()
    try:
        pipe = Pipe(str(tmp_path / "mcp.sock"), permission_tool=True, stdout=w)
        for m in (INIT, INITIALIZED, call(1, "recv"), call(2, "ask_operator", question="q"), call(3, "send")):
            pipe.from_cli(line(m))
        while pipe.out:  # as if every line was written
            pipe.written(*pipe.out.popleft())
        assert pipe.from_daemon(line({"jsonrpc": "2.0", "id": 0, "result": {}})) is not None
        pipe.from_cli(line(call(4, "kill", name="x")))  # not written yet: it goes out once, after
        pipe.resume()
        os.close(w)
        w = -1
        answered = [json.loads(x) for x in os.read(r, 1 << 16).splitlines()]
    finally:
        for fd in (r, w):
            if fd >= 0:
                os.close(fd)
    assert [(a["id"], a["result"]["isError"]) for a in answered] == [(2, True)]
    sent = [json.loads(x) for x, _ in pipe.out]
    assert sent[0] == {"hyperhive": {"permission_tool": True}}
    assert sent[1]["method"] == "initialize" and sent[1]["id"] == "hyperhive-pipe-initialize"
    assert sent[2] == INITIALIZED
    assert [(m.get("id"), m["params"]["name"]) for m in sent[3:]] == [(1, "recv"), (3, "send"), (4, "kill")]
    # The replayed initialize's answer is the pipe's: the CLI never sees it.
    assert pipe.from_daemon(line({"jsonrpc": "2.0", "id": "hyperhive-pipe-initialize", "result": {}})) is None


class Daemon:
    """A scripted mcp.sock: each connection's lines, kept; it answers as told."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.conns: list[list[dict[str, Any]]] = []
        self.server: asyncio.AbstractServer | None = None
        self.seen = asyncio.Event()

    async def start(self) -> None:
        self.server = await asyncio.start_unix_server(self._conn, path=str(self.path))

    async def _conn(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        got: list[dict[str, Any]] = []
        self.conns.append(got)
        first = len(self.conns) == 1
        while raw := await r.readline():
            msg = json.loads(raw)
            got.append(msg)
            self.seen.set()
            if msg.get("method") == "initialize":
                w.write(line({"jsonrpc": "2.0", "id": msg["id"], "result": {"n": len(self.conns)}}))
            elif msg.get("method") == "tools/call" and first and msg["params"]["name"] == "send":
                w.close()  # gone with three calls unanswered
                return
            elif msg.get("method") == "tools/call" and not first:
                w.write(line({"jsonrpc": "2.0", "id": msg["id"], "result": {"content": [], "again": True}}))


async def read_json(stream: asyncio.StreamReader) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(await asyncio.wait_for(stream.readline(), 30))
    return out


async def test_the_process_reconnects_replays_and_answers_what_it_cannot_send_again(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    daemon = Daemon(run / "mcp.sock")
    await daemon.start()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-I", "-m", "hyperhive", "mcp", "--socket", str(run / "hive.sock"),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={"PATH": os.environ["PATH"], "HYPERHIVE_MCP_PERMISSION_TOOL": "1"})
    assert proc.stdin is not None and proc.stdout is not None
    try:
        proc.stdin.write(line(INIT) + line(INITIALIZED))
        assert await read_json(proc.stdout) == {"jsonrpc": "2.0", "id": 0, "result": {"n": 1}}
        proc.stdin.write(line(call(1, "recv", wait_seconds=30)) + line(call(2, "ask_operator", question="q")))
        await proc.stdin.drain()
        while sum(m.get("method") == "tools/call" for m in daemon.conns[0]) < 2:  # in flight, then it goes
            daemon.seen.clear()
            await asyncio.wait_for(daemon.seen.wait(), 30)
        proc.stdin.write(line(call(3, "send", to="b", body="x")))
        answers = {m["id"]: m for m in [await read_json(proc.stdout) for _ in range(3)]}
        assert answers[2]["result"]["isError"] is True  # its outcome is unknown: said, not sent again
        assert answers[1]["result"]["again"] and answers[3]["result"]["again"]
        first, second = daemon.conns
        assert first[0] == second[0] == {"hyperhive": {"permission_tool": True}}
        assert second[1]["id"] == "hyperhive-pipe-initialize" and second[2] == INITIALIZED
        again = [m for m in second if m.get("method") == "tools/call"]
        assert sorted(m["id"] for m in again) == [1, 3]
        key = next(m for m in first if m.get("id") == 3)["params"]["_meta"][KEY_META]
        assert next(m for m in again if m["id"] == 3)["params"]["_meta"][KEY_META] == key
        proc.stdin.close()
        assert await asyncio.wait_for(proc.wait(), 30) == 0
        assert b"reconnecting" in await proc.stderr.read()  # type: ignore[union-attr]
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        assert daemon.server is not None
        daemon.server.close()


def test_it_imports_only_the_standard_library_and_ends_when_the_agent_is_gone(tmp_path: Path) -> None:
    gone = tmp_path / "purged" / "run" / "hive.sock"
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-I", "-X", "importtime", "-m", "hyperhive", "mcp", "--socket", str(gone)],
                       capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    took = time.monotonic() - t0
    assert r.returncode == 1 and r.stdout == ""
    said = [x for x in r.stderr.splitlines() if not x.startswith("import time:")]
    assert len(said) == 1 and said[0].startswith("hive mcp: cannot reach the daemon"), r.stderr
    modules = {x.split("|")[-1].strip() for x in r.stderr.splitlines() if x.startswith("import time:")}
    assert {"hyperhive", "hyperhive.mcp_pipe"} <= modules
    assert not {m for m in modules if m.split(".")[0] in ("mcp", "pydantic", "anyio", "structlog", "tornado")}
    assert "hyperhive.cli" not in modules
    assert took < 10  # no wait for a socket whose directory is gone


def test_run_by_path_it_starts_with_no_site_and_no_package(tmp_path: Path) -> None:
    from hyperhive.mcp_pipe import PIPE_FILE, pipe_argv

    gone = tmp_path / "purged" / "run" / "hive.sock"
    argv = pipe_argv(sys.executable, str(gone))
    assert argv == [sys.executable, "-I", "-S", PIPE_FILE, "--socket", str(gone)]
    r = subprocess.run([argv[0], "-X", "importtime", *argv[1:]], capture_output=True, text=True, timeout=60,
                       stdin=subprocess.DEVNULL, cwd=tmp_path)
    assert r.returncode == 1 and "hive mcp: cannot reach the daemon" in r.stderr, r.stderr
    modules = {x.split("|")[-1].strip() for x in r.stderr.splitlines() if x.startswith("import time:")}
    assert "site" not in modules and not {m for m in modules if m.startswith("hyperhive")}
    assert not {"secrets", "hashlib", "pathlib"} & modules  # what -m hyperhive mcp paid for (~28 ms)
