"""Review of issue 15 (hostile agent): many calls at once against the hard cap.

A running turn may finish past its budget, but no call may run past the hard
cap (1.5 x). The gateway checked each call on its own: before it, the spend
recorded so far; as it streamed, that spend plus its own partial usage. The
calls in flight were nowhere. So an agent in a turn (every `run` of the
builtin driver is one) opened streams one after another, each waiting on the
API: each saw the recorded spend of $0 plus its own $0.50 and went on, six of
them $3.00 against a $1.50 cap.

Fixed (hyperhive/web/tables/spend.py, hyperhive/sandbox/gateway_forward.py):
a call's partial usage counts in flight (``Spend.cut(agent, usage, call)``
until ``done``) for the cut of every other call and for the refusal of a new
one. The stream that crosses the cap is cut (its input was billed already),
the next calls are refused before they reach the API: at most the cap plus
one call.

Still open (xfail below): calls whose usage comes only at their end (a
non-streamed call; and a real API stream's output tokens, which only the
last ``message_delta`` carries) are admitted on what is spent, with nothing
known of the others in flight: N at once each pass.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_anthropic import FakeAnthropic, Reply, text
from support import Hive, priced_hive, wait_for
from test_review15_gateway_leave import ALL_KINDS, PRICED, Upstream, gateway_connections, request_code
from test_review15_gateway_leave import pytestmark as _marks
from test_sandbox import py, run_cmd

pytestmark = _marks

CALL_USD = 0.5  # 500 input tokens at $1 per 1000


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


def billed(fake: FakeAnthropic, marker: str) -> float:
    """What the API answered (and bills) for the calls carrying ``marker``, at $1 per 1000 tokens."""
    return float(sum(sum(v for k, v in u.items() if k != "model") / 1000 for body, u in list(fake.usages)
                     if marker in json.dumps(body)))


def counted(hive: Hive, agent: str) -> float:
    for row in hive.admin("usage", since="all")["agents"]:
        if row["name"] == agent:
            return float(row["cost_usd"])
    return 0.0


def test_streams_opened_one_after_another_stop_at_the_hard_cap(hive: Hive, fake: FakeAnthropic,
                                                               upstream: Upstream) -> None:
    upstream.rules["cap-stream"] = lambda: Reply([text("a"), text("b")], hold=upstream.release,
                                                 input_tokens=500, output_tokens=0, model=PRICED)
    hive.spawn("greedy", budget_usd=1.0)  # hard cap $1.50
    # In one turn: six streams, each opened once the one before is under way (its input known).
    code = request_code("cap-stream", True,
                        "socks, seen = [], []\n"
                        "for i in range(6):\n"
                        " s = conn()\n"
                        " buf = read_until(s, b'content_block_start')\n"
                        " seen.append('began' if b'content_block_start' in buf else buf[:12].decode())\n"
                        " socks.append(s)\n"
                        "print('SEEN', seen)\n"
                        "for s in socks:\n"
                        " s.close()\n")
    status, out = run_cmd(hive, "greedy", py(code))
    assert "SEEN" in out, out
    wait_for(lambda: gateway_connections(hive, "greedy") == 0 or None, timeout=20, what="the streams left")
    upstream.release.set()
    cap = 1.5
    # (a stream cut after its message_start counts the one output token that event carries)
    wait_for(lambda: counted(hive, "greedy") >= billed(fake, "cap-stream") - 1e-9 or None, timeout=20,
             what="every call the API answered counted")
    assert billed(fake, "cap-stream") <= cap + CALL_USD, (out, billed(fake, "cap-stream"))
    assert sum(1 for r in fake.requests if "cap-stream" in json.dumps(r.body)) <= 3, out


@pytest.mark.xfail(strict=True, reason=(
    "admission looks at what is spent, not at what the calls in flight may cost: N calls whose usage comes "
    "only at their end each pass. Fix (hyperhive/web/tables/spend.py, gateway_forward.py): at admission "
    "reserve a worst case per call (its prompt's bytes as input tokens, the largest max_tokens in the body as "
    "output, at the model's price, the dearest if unknown) and make a call that does not fit under the hard "
    "cap with the others' reservations wait (async prepare) until they end; one call alone always runs, so a "
    "turn still finishes and the overshoot is at most one call."))
def test_calls_started_together_stop_at_the_hard_cap(hive: Hive, fake: FakeAnthropic, upstream: Upstream) -> None:
    arrived: list[int] = []

    def answer() -> Reply:  # held until all six are upstream (or, should some be kept back, a while)
        arrived.append(1)
        if len(arrived) == 6:
            upstream.release.set()
        return Reply([text("a")], hold=upstream.release, input_tokens=500, output_tokens=0, model=PRICED)

    upstream.rules["cap-json"] = answer
    later = threading.Timer(15, upstream.release.set)
    later.start()
    hive.spawn("greedy", budget_usd=1.0)
    # In one turn: six non-streamed calls at once; their usage comes with their answers.
    code = request_code("cap-json", False,
                        "socks = [conn() for _ in range(6)]\n"
                        "print('STATUSES', [read_until(s, b'never')[9:12].decode() for s in socks])\n")
    try:
        status, out = run_cmd(hive, "greedy", py(code), timeout=90)
    finally:
        later.cancel()
    assert "STATUSES" in out, out
    wait_for(lambda: counted(hive, "greedy") >= billed(fake, "cap-json") - 1e-9 or None, timeout=20,
             what="every call the API answered counted")
    assert billed(fake, "cap-json") <= 1.5 + CALL_USD, (out, billed(fake, "cap-json"))


def test_a_call_whose_body_comes_late_is_checked_when_it_is_sent(hive: Hive, fake: FakeAnthropic,
                                                                 upstream: Upstream) -> None:
    """The gateway asked the budget at a request's head (``prepare``) and forwarded it once its
    body had come, up to 120 s later, asking nothing more: an agent opened its calls while under
    budget, held their bodies, went past its hard cap with another call, then sent the bodies:
    each went to the API. Fixed (hyperhive/sandbox/gateway_forward.py): asked again just before
    the request goes upstream."""
    upstream.rules["slow-body"] = lambda: Reply([text("late")], input_tokens=500, output_tokens=0, model=PRICED)
    upstream.rules["crossing"] = lambda: Reply([text("big")], input_tokens=1600, output_tokens=0, model=PRICED)
    hive.spawn("late", budget_usd=1.0)
    code = request_code("slow-body", False,
                        "BIG = json.dumps({'model': 'x', 'max_tokens': 9, 'messages': [{'role': 'user', "
                        "'content': 'crossing'}]}).encode()\n"
                        "socks = []\n"
                        "for i in range(6):\n"
                        " s = socket.create_connection(('127.0.0.1', 8787), timeout=TIMEOUT)\n"
                        " s.sendall(b'POST /v1/messages HTTP/1.1\\r\\nHost: api\\r\\nContent-Type: application/json"
                        "\\r\\nConnection: close\\r\\nContent-Length: %d\\r\\n\\r\\n' % len(BODY) + BODY[:10])\n"
                        " socks.append(s)\n"
                        "b = socket.create_connection(('127.0.0.1', 8787), timeout=TIMEOUT)\n"
                        "b.sendall(b'POST /v1/messages HTTP/1.1\\r\\nHost: api\\r\\nContent-Type: application/json"
                        "\\r\\nConnection: close\\r\\nContent-Length: %d\\r\\n\\r\\n' % len(BIG) + BIG)\n"
                        "first = read_until(b, b'never')[9:12].decode()\n"
                        "for s in socks:\n"
                        " s.sendall(BODY[10:])\n"
                        "print('STATUSES', first, [read_until(s, b'never')[9:12].decode() for s in socks])\n")
    status, out = run_cmd(hive, "late", py(code))
    assert "STATUSES 200 ['400', '400', '400', '400', '400', '400']" in out, out
    assert not [r for r in fake.requests if "slow-body" in json.dumps(r.body)]
