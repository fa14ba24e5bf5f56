"""The builtin driver's `run <command>`: real `sh` subprocesses, a real MCP
session to `hive mcp` on a real daemon's agent socket (agent "a", taken over
from the daemon so the test drives it). The reply is read from the send the
driver makes (its tool_use event), and, where it matters that it arrives,
from the operator's inbox in the daemon.

Starting `hive mcp` costs more than most of these runs, so the module shares
one MCP session (on one event loop) among drivers made per test; the turn
loop tests open and close their drivers themselves, as the harness does."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from agent_harness import take_over
from mcp import ClientSession
from mcp_support import mcp_session
from support import Hive, async_wait_for, wait_for

from hyperhive.client import AsyncClient
from hyperhive.harness.builtin import BuiltinDriver
from hyperhive.harness.builtin_shell import TRUNCATED
from hyperhive.harness.bus import Bus
from hyperhive.harness.turns import TurnLoop
from hyperhive.names import MANAGER, OPERATOR
from hyperhive.wire import InboxRow

MARK = "[builtin reply from a]"
pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]  # one daemon for the module


@pytest.fixture(scope="module")
def hive(module_hive: Hive) -> Iterator[Hive]:
    """One daemon for the module, with agent "a" ours to drive."""
    take_over(module_hive, "a")
    yield module_hive


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def session(hive: Hive) -> AsyncIterator[ClientSession]:
    """One MCP session for the module, entered and left by a task of its own
    (the stdio client's cancel scopes must be exited by the task that entered them)."""
    ready: asyncio.Future[ClientSession] = asyncio.get_running_loop().create_future()
    done = asyncio.Event()

    async def own() -> None:
        try:
            async with mcp_session(hive.socket("a")) as s:
                ready.set_result(s)
                await done.wait()
        except BaseException as exc:
            if not ready.done():  # say why the session did not open
                ready.set_exception(exc)
            raise

    owner = asyncio.create_task(own())
    yield await ready
    done.set()
    await owner


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "workspace"
    ws.mkdir()
    return ws


class Events:
    """The driver's emit: records (kind, data) in order."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, kind: str, **data: Any) -> None:
        self.rows.append((kind, data))

    def kinds(self) -> list[str]:
        return [k for k, _ in self.rows]

    def tools(self) -> list[tuple[str, Any]]:
        """(tool name, input) of each tool_use, (\"result\", data) of each tool_result."""
        return [(d["name"], d["input"]) if k == "tool_use" else ("result", d)
                for k, d in self.rows if k in ("tool_use", "tool_result")]

    def reply(self) -> dict[str, Any]:
        [send] = [d["input"] for k, d in self.rows if k == "tool_use" and d["name"] == "mcp__hyperhive__send"]
        return send


MakeDriver = Callable[..., BuiltinDriver]


@pytest.fixture
def make(hive: Hive, session: ClientSession) -> MakeDriver:
    """Drivers on the module's session (what `open` would have made), for a
    workspace and the driver's options."""

    def make_driver(workspace: Path | None, **options: Any) -> BuiltinDriver:
        options.setdefault("shell_allowed", True)
        driver = BuiltinDriver("a", str(hive.socket("a")), workspace=workspace, **options)
        driver.session = session
        return driver

    return make_driver


@asynccontextmanager
async def driver_for(hive: Hive, workspace: Path | None, **options: Any) -> AsyncIterator[BuiltinDriver]:
    """A driver with its own session, opened and closed as the harness does."""
    options.setdefault("shell_allowed", True)
    driver = BuiltinDriver("a", str(hive.socket("a")), workspace=workspace, **options)
    await driver.open()
    try:
        yield driver
    finally:
        await driver.close()


def message(body: str, sender: str = OPERATOR) -> InboxRow:
    return InboxRow(0, sender, "a", body, 0.0, 0.0)


async def run_turn(driver: BuiltinDriver, body: str, sender: str = OPERATOR) -> Events:
    events = Events()
    await driver.turn([message(body, sender)], events)
    return events


def gone(pid: int) -> bool:
    """No such process, or only its zombie (dead, waiting for init to reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat[stat.rindex(")") + 2] in "ZX"


def pid_in(path: Path) -> int:
    """A pid the command wrote (it has run by then)."""
    return int(path.read_text())


def operator_inbox(hive: Hive) -> list[str]:
    return [m["body"] for m in hive.admin("inbox", limit=50)["messages"] if m["from"] == "a"]


async def test_exit_code_and_combined_output_reach_the_sender(hive: Hive, make: MakeDriver, workspace: Path) -> None:
    driver = make(workspace)
    events = await run_turn(driver, "run echo out; echo err >&2; exit 3")
    body = f"{MARK} run: exit 3\nout\nerr\n"
    assert events.reply() == {"to": OPERATOR, "body": body}
    tools = events.tools()
    assert [t[0] for t in tools] == ["Bash", "result", "mcp__hyperhive__send", "result"]
    assert tools[0][1] == {"command": "echo out; echo err >&2; exit 3"}
    bash_result, send_result = tools[1][1], tools[3][1]
    assert bash_result["content"] == "exit 3\nout\nerr\n" and bash_result["is_error"] is True
    assert bash_result["tool_use_id"] == events.rows[0][1]["id"]
    assert send_result["is_error"] is False
    assert events.kinds()[-1] == "text"
    await asyncio.to_thread(wait_for, lambda: body in operator_inbox(hive), what="the reply in the operator inbox")


async def test_success_is_no_error_and_runs_in_the_workspace(make: MakeDriver, workspace: Path) -> None:
    driver = make(workspace)
    events = await run_turn(driver, "run pwd -P\n  test -t 0 || echo stdin is no terminal; cat", sender=MANAGER)
    body = f"{MARK} run: exit 0\n{workspace.resolve()}\nstdin is no terminal\n"
    assert events.reply() == {"to": MANAGER, "body": body}
    assert events.tools()[1][1]["is_error"] is False


async def test_output_is_cut_at_4096_raw_bytes(make: MakeDriver, workspace: Path) -> None:
    driver = make(workspace)
    # 4095 ASCII bytes, then a two-byte character the cut splits: its first byte
    # is all that is kept, and decodes as U+FFFD.
    events = await run_turn(driver, "run head -c 4095 /dev/zero | tr '\\0' x; printf '\\303\\251'; seq 100000")
    exact = await run_turn(driver, "run head -c 4096 /dev/zero | tr '\\0' y")
    assert events.reply()["body"] == f"{MARK} run: exit 0\n" + "x" * 4095 + "\ufffd" + TRUNCATED
    assert exact.reply()["body"] == f"{MARK} run: exit 0\n" + "y" * 4096  # all of it: no marker


async def test_a_command_killed_by_a_signal(make: MakeDriver, workspace: Path) -> None:
    driver = make(workspace)
    events = await run_turn(driver, "run echo dying; kill -KILL $$")
    assert events.reply()["body"] == f"{MARK} run: killed by SIGKILL\ndying\n"
    assert events.tools()[1][1] == {"tool_use_id": events.rows[0][1]["id"], "content": "killed by SIGKILL\ndying\n",
                                    "is_error": True}


async def test_odd_bytes_are_replaced_and_the_reply_goes_out(hive: Hive, make: MakeDriver, workspace: Path) -> None:
    # a UTF-8-encoded lone surrogate, bytes no UTF-8 has, a valid character
    raw = b"ok \xed\xa0\x80 \xff\xfe \xc3\xa9 end"
    (workspace / "odd.bin").write_bytes(raw)
    driver = make(workspace)
    events = await run_turn(driver, "run cat odd.bin")
    body = f"{MARK} run: exit 0\n" + raw.decode("utf-8", errors="replace")
    assert body.endswith("ok \ufffd\ufffd\ufffd \ufffd\ufffd é end")
    assert events.reply()["body"] == body
    assert events.tools()[3][1]["is_error"] is False  # the daemon took it
    await asyncio.to_thread(wait_for, lambda: body in operator_inbox(hive), what="the odd reply in the operator inbox")


async def test_what_the_command_leaves_running_is_killed_when_it_exits(make: MakeDriver, workspace: Path) -> None:
    driver = make(workspace)
    events = await run_turn(driver, "run sleep 30 & echo $! > bg.pid; echo left it")
    assert events.reply()["body"] == f"{MARK} run: exit 0\nleft it\n"
    pid = pid_in(workspace / "bg.pid")
    await async_wait_for(lambda: gone(pid), what="the background sleep gone")


async def test_timeout_kills_the_group_and_replies_with_the_output_so_far(
        make: MakeDriver, workspace: Path) -> None:
    driver = make(workspace, run_timeout=1)
    events = await run_turn(driver, "run sleep 30 & echo $! > sleep.pid; echo $$ > sh.pid; echo before; wait")
    assert events.reply()["body"] == f"{MARK} run: timed out after 1 s\nbefore\n"
    assert events.tools()[1][1]["is_error"] is True
    pids = [pid_in(workspace / name) for name in ("sh.pid", "sleep.pid")]
    await async_wait_for(lambda: all(gone(p) for p in pids), what="the shell and its sleep gone")


@pytest.mark.parametrize("how", ["cancel", "stop"])
async def test_cancelling_the_turn_kills_the_group(hive: Hive, workspace: Path, how: str) -> None:
    """Through the turn loop, as the web UI's /cancel (and a stopping harness)
    does it: the turn task is cancelled while the command runs; the group is
    dead by the time the cancel has returned, and no reply goes out."""
    client = AsyncClient(hive.socket("a"))
    await client.connect()
    bus = Bus(None)
    stop = asyncio.Event()
    async with driver_for(hive, workspace) as driver:
        turns = TurnLoop("a", client, driver, bus)
        runner = asyncio.create_task(turns.run(stop))
        try:
            turns.note("run sleep 30 & echo $! > sleep.pid; echo $$ > sh.pid; wait", verified=True)
            await async_wait_for(lambda: (workspace / "sh.pid").exists() and (workspace / "sleep.pid").exists()
                                 and (workspace / "sleep.pid").read_text().strip(), what="the command running")
            pids = [pid_in(workspace / n) for n in ("sh.pid", "sleep.pid")]
            assert not any(gone(p) for p in pids)
            if how == "cancel":
                assert await turns.cancel() is True
            else:
                stop.set()
                await asyncio.wait_for(runner, 10)
            assert all(gone(p) for p in pids)
        finally:
            stop.set()
            await asyncio.wait_for(runner, 10)
            await client.close()
    kinds = [e.kind for e in bus.history()]
    assert kinds[:3] == ["note", "turn_start", "tool_use"] and "cancelled" in kinds and kinds[-1] == "turn_end"
    uses = [e.data for e in bus.history() if e.kind == "tool_use"]
    assert [u["name"] for u in uses] == ["Bash"]  # no reply was sent
    [result] = [e.data for e in bus.history() if e.kind == "tool_result"]
    assert result["is_error"] is True and "killed" in result["content"]


async def test_a_command_that_cannot_start_says_why(make: MakeDriver, tmp_path: Path) -> None:
    events = await run_turn(make(tmp_path / "no-such-workspace"), "run true")
    body = events.reply()["body"]
    assert body.startswith(f"{MARK} run: could not start: ") and "no-such-workspace" in body
    assert events.tools()[1][1]["is_error"] is True


async def test_unsandboxed_agents_refuse_and_run_nothing(make: MakeDriver, workspace: Path) -> None:
    driver = make(workspace, shell_allowed=False)
    events = await run_turn(driver, "run touch ran")
    assert events.reply() == {"to": OPERATOR, "body": f"{MARK} run refused: this agent is not sandboxed"}
    assert [t[0] for t in events.tools()] == ["mcp__hyperhive__send", "result"]
    assert not (workspace / "ran").exists()


async def test_only_the_operator_and_the_manager_may_run(make: MakeDriver, workspace: Path) -> None:
    driver = make(workspace)
    events = await run_turn(driver, "run touch ran", sender="b")
    assert events.reply() == {
        "to": "b", "body": f"{MARK} run refused: only the operator or the manager may run commands here"}
    assert not (workspace / "ran").exists()


async def test_without_a_workspace_commands_run_in_the_current_directory(
        make: MakeDriver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    events = await run_turn(make(None), "run pwd -P")
    assert events.reply()["body"] == f"{MARK} run: exit 0\n{os.path.realpath(tmp_path)}\n"


async def test_binary_output_with_nul_bytes_goes_out_too(hive: Hive, make: MakeDriver, workspace: Path) -> None:
    raw = b"\x7fELF\x02\x01\x01\x00\x00\x00\x80\x9f end"  # the start of an executable, say
    (workspace / "bin").write_bytes(raw)
    events = await run_turn(make(workspace), "run cat bin")
    body = f"{MARK} run: exit 0\n\x7fELF\x02\x01\x01\x00\x00\x00\ufffd\ufffd end"
    assert events.reply()["body"] == body
    assert events.tools()[3][1]["is_error"] is False
    await asyncio.to_thread(wait_for, lambda: body in operator_inbox(hive), what="the binary reply, delivered")
