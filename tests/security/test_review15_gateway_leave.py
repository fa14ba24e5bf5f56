"""Review of issue 15 (hostile agent): a call the agent walks away from.

The gateway reads each call's usage on the way back to the agent (`sse_usage`):
the input side in ``message_start``, the output tokens in the last
``message_delta``. It used to stop reading the upstream's answer the moment
the agent's connection closed (``_on_chunk`` raised ``_AgentGone`` before it
fed the scanner). So an agent that read a stream up to the text it wanted and
hung up before the final ``message_delta`` was counted for its input and one
output token, whatever the API generated and billed; one that sent a
non-streamed request and hung up at once was counted for nothing at all
(the scanner was not even set up: ``_start_response`` returned early for an
agent already gone). Its budget never moved.

Fixed (hyperhive/sandbox/gateway_forward.py): once the agent has gone, the
answer is still read to its end (nothing more is written) and counted, the
hard cap's cut still applying; the upstream requests an agent has in flight,
its abandoned ones included, are capped (`ApiGateway.enter`, at most
``MAX_IN_FLIGHT``), so walking away cannot take the shared upstream client's
slots from the other agents either (it took all 200: another agent's call
waited 30 s in tornado's queue, then failed with a 502).

Every call here is made from a shell inside the agent's own sandbox, through
its relay on 127.0.0.1:8787, as its Bash tool would.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_anthropic import FakeAnthropic, Reply, text, tool_use
from support import Hive, priced_hive, wait_for
from test_sandbox import py, run_cmd

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0 or shutil.which("bwrap") is None or shutil.which("ss") is None,
                       reason="a root daemon with bubblewrap (and ss, to see a connection close)"),
]

PRICED = "claude-review15-test"  # $1 per 1000 tokens of every kind
ALL_KINDS = {PRICED: {"input": 1000.0, "output": 1000.0, "cache_read": 1000.0, "cache_write": 1000.0}}


class Upstream:
    """The scripted API: each request's answer chosen by a marker in its text."""

    def __init__(self) -> None:
        self.release = threading.Event()  # lets every held answer go on
        self.rules: dict[str, Callable[[], Reply]] = {}

    def __call__(self, body: dict[str, Any]) -> Reply:
        said = json.dumps(body.get("messages"))
        for marker, make in self.rules.items():
            if marker in said:
                return make()
        return Reply([text("ok")], input_tokens=1, output_tokens=1, model=PRICED)


@pytest.fixture
def upstream() -> Upstream:
    return Upstream()


@pytest.fixture
def fake(upstream: Upstream) -> Iterator[FakeAnthropic]:
    with FakeAnthropic(upstream) as f:
        try:
            yield f
        finally:
            upstream.release.set()


@pytest.fixture
def hive(tmp_path: Path, fake: FakeAnthropic, upstream: Upstream) -> Iterator[Hive]:
    h = priced_hive(tmp_path, fake.env(), ALL_KINDS, "--sandbox", "on").start()
    try:
        yield h
    finally:
        upstream.release.set()
        h.stop()


def request_code(marker: str, stream: bool, extra: str = "") -> str:
    """Python (inside the sandbox): ``conn()`` opens the relay and sends one Messages API call."""
    return (
        "import json, socket, time\n"
        "TIMEOUT = 60\n"
        f"BODY = json.dumps({{'model': 'x', 'stream': {stream!r}, 'max_tokens': 9000, "
        f"'messages': [{{'role': 'user', 'content': {marker!r}}}]}}).encode()\n"
        "def conn():\n"
        " s = socket.create_connection(('127.0.0.1', 8787), timeout=TIMEOUT)\n"
        " s.sendall(b'POST /v1/messages HTTP/1.1\\r\\nHost: api\\r\\nContent-Type: application/json\\r\\n'\n"
        "           b'x-api-key: mine\\r\\nConnection: close\\r\\nContent-Length: %d\\r\\n\\r\\n' % len(BODY) + BODY)\n"
        " return s\n"
        "def read_until(s, token):\n"
        " buf = b''\n"
        " while token not in buf:\n"
        "  try:\n"
        "   c = s.recv(65536)\n"
        "  except socket.timeout:\n"
        "   break\n"
        "  if not c:\n"
        "   break\n"
        "  buf += c\n"
        " return buf\n" + extra)


def gateway_connections(hive: Hive, agent: str) -> int:
    """The daemon's open connections on ``agent``'s gateway socket (its relay's, from inside)."""
    assert hive.proc is not None
    path = str(hive.paths.agent(agent) / "run" / "api.sock")
    out = subprocess.run(["ss", "-xpH", "state", "connected"], capture_output=True, text=True, check=True).stdout
    return sum(1 for line in out.splitlines() if path in line and f"pid={hive.proc.pid}," in line)


def tokens(hive: Hive, agent: str) -> dict[str, int]:
    for row in hive.admin("usage", since="all")["agents"]:
        if row["name"] == agent:
            return dict(row["tokens"])
    return {}


def wait_counted(hive: Hive, agent: str, kind: str, n: int, timeout: float = 20) -> None:
    """Wait until ``agent``'s ``kind`` tokens read ``n`` (the failure says what was counted)."""
    try:
        wait_for(lambda: tokens(hive, agent).get(kind) == n or None, timeout=timeout, what=f"{n} {kind} tokens")
    except AssertionError:
        raise AssertionError(f"{agent}: {n} {kind} tokens answered, counted: {tokens(hive, agent)}") from None


def test_a_stream_left_before_its_last_event_is_counted_whole(hive: Hive, fake: FakeAnthropic,
                                                              upstream: Upstream) -> None:
    upstream.rules["leave-early"] = lambda: Reply([text("the part it wanted"), text("and the rest")],
                                                  hold=upstream.release, input_tokens=100, output_tokens=5000,
                                                  model=PRICED)
    hive.spawn("leaver")
    # It reads the stream up to the first block's start, then hangs up.
    code = request_code("leave-early", True, "s = conn()\nbuf = read_until(s, b'content_block_start')\n"
                                             "s.close()\nprint('LEFT', b'message_start' in buf)\n")
    status, out = run_cmd(hive, "leaver", py(code))
    assert "LEFT True" in out, out
    wait_for(lambda: gateway_connections(hive, "leaver") == 0 or None, timeout=20,
             what="the gateway has seen the agent hang up")
    upstream.release.set()  # the API finishes its answer: 5000 output tokens, billed
    # Counted as the API answered: its input and all of its output.
    wait_counted(hive, "leaver", "output", 5000)
    assert tokens(hive, "leaver")["input"] == 100


def test_a_call_left_before_its_answer_is_counted(hive: Hive, fake: FakeAnthropic, upstream: Upstream) -> None:
    upstream.rules["fire-and-forget"] = lambda: Reply([text("an answer nobody reads")], hold=upstream.release,
                                                      input_tokens=300, output_tokens=4000, model=PRICED)
    hive.spawn("burner")
    code = request_code("fire-and-forget", False, "s = conn()\ns.close()\nprint('SENT')\n")
    status, out = run_cmd(hive, "burner", py(code))
    assert "SENT" in out, out
    wait_for(lambda: any("fire-and-forget" in json.dumps(r.body) for r in fake.requests) or None, timeout=20,
             what="the call reached the API")
    wait_for(lambda: gateway_connections(hive, "burner") == 0 or None, timeout=20,
             what="the gateway has seen the agent hang up")
    upstream.release.set()
    wait_counted(hive, "burner", "output", 4000)
    assert tokens(hive, "burner")["input"] == 300


def test_calls_left_behind_cannot_take_the_other_agents_upstream(hive: Hive, fake: FakeAnthropic,
                                                                 upstream: Upstream) -> None:
    upstream.rules["hold-forever"] = lambda: Reply([text("never done")], hold=upstream.release,
                                                   input_tokens=1, output_tokens=1, model=PRICED)
    hive.spawn("hog")
    hive.spawn("victim")
    # Batches of 16 connections (its cap at once), each left once its answer has begun, until 200
    # upstream requests are held open: the gateway client's 200.
    code = request_code("hold-forever", True,
                        "TIMEOUT = 5\n"
                        "began = refused = tries = 0\n"
                        "while began < 200 and tries < 1000:\n"
                        " socks = [conn() for _ in range(16)]\n"
                        " tries += 16\n"
                        " for s in socks:\n"
                        "  buf = read_until(s, b'content_block_start')\n"
                        "  began += b'content_block_start' in buf\n"
                        "  refused += buf.startswith(b'HTTP/1.1 503')\n"
                        "  s.close()\n"
                        "print('BEGAN', began, 'REFUSED', refused, 'TRIES', tries)\n")
    status, out = run_cmd(hive, "hog", py(code), timeout=120)
    assert "BEGAN" in out, out
    # Another agent's ordinary call goes through at once.
    call = ("import json, time, urllib.request, urllib.error\n"
            "req = urllib.request.Request('http://127.0.0.1:8787/v1/messages', method='POST', data=json.dumps("
            "{'model': 'x', 'max_tokens': 5, 'messages': [{'role': 'user', 'content': 'hi'}]}).encode(), "
            "headers={'content-type': 'application/json', 'x-api-key': 'mine'})\n"
            "t = time.monotonic()\n"
            "try:\n r = urllib.request.urlopen(req, timeout=60); s = r.status\n"
            "except urllib.error.HTTPError as e:\n s = e.code\n"
            "print('STATUS', s, 'SECONDS', round(time.monotonic() - t, 1))\n")
    status, out = run_cmd(hive, "victim", py(call), timeout=90)
    assert "STATUS 200" in out, out
    assert float(out.split("SECONDS", 1)[1].split()[0]) < 10, out


@pytest.mark.parametrize("decoy", [False, True])
def test_a_non_streamed_answer_over_8_mib_is_counted(hive: Hive, fake: FakeAnthropic, upstream: Upstream,
                                                     decoy: bool) -> None:
    """The gateway kept a non-streamed answer for its usage only up to 8 MiB, and read none past
    that: an answer carrying a fetched PDF (web_fetch's base64 document), many search results or
    a long tool input is that big, and was counted as $0. Fixed (hyperhive/sandbox/sse_usage.py
    `JsonUsage`): past the limit its head (the model comes first) and its tail (the usage comes
    last) are kept, and the usage is read from those. ``decoy``: the answer's last block is a
    tool call the model wrote with a ``usage`` of its own in its input: the answer's is taken."""
    blocks = [text("x" * (9 << 20))]
    if decoy:
        blocks.append(tool_use("t", {"usage": {"input_tokens": 1, "output_tokens": 1}, "model": "claude-free"}))
    upstream.rules["big-answer"] = lambda: Reply(blocks, input_tokens=250_000, output_tokens=1200, model=PRICED)
    hive.spawn("big")
    code = request_code("big-answer", False, "s = conn()\nbuf = read_until(s, b'never')\n"
                                              "print('STATUS', buf[9:12], 'BYTES', len(buf))\n")
    status, out = run_cmd(hive, "big", py(code))
    assert "STATUS b'200'" in out, out
    wait_counted(hive, "big", "input", 250_000)
    assert tokens(hive, "big")["output"] == 1200
    [row] = [r for r in hive.admin("usage", since="all")["agents"] if r["name"] == "big"]
    assert row["cost_usd"] == pytest.approx(251.2)  # priced as PRICED: its model read from the head
