"""What one agent can make the daemon hold is bounded (issue 12, items 5 and 6).

The attacks, each against a real daemon over real unix sockets:
- sends with a lone surrogate (``"\\ud800"``) failed every send committed in
  the same batch: now they are refused at decode, the others all land;
- 30 pipelined ``recent`` replies never read grew the daemon by 600 MB: now a
  reply is at most 1 MiB and a peer that does not read is cut off past 4 MiB;
- a flood of pings never read grew it by gigabytes: now a connection has at
  most 64 requests in flight and the reader stops until they finish;
- connections past the cap, and accepts failing with EMFILE, must not wedge
  the admin socket or flood the log.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import select
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from support import Hive, wait_for

from hyperhive import client

pytestmark = pytest.mark.e2e

MB = 1 << 20


def rss(pid: int) -> int:
    """The process's resident set, in bytes (VmRSS)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def daemon_pid(hive: Hive) -> int:
    assert hive.proc is not None
    return hive.proc.pid


def rows(hive: Hive, sql: str, *args: Any) -> int:
    with sqlite3.connect(hive.paths.db) as db:
        return int(db.execute(sql, args).fetchone()[0])


def req(rid: int, op: str, **fields: Any) -> bytes:
    return json.dumps({"id": rid, "op": op, **fields}).encode() + b"\n"  # ensure_ascii: \ud800 stays an escape


def connect(hive: Hive, name: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(str(hive.socket(name)))
    return s


def ping_ok(hive: Hive, name: str, timeout: float = 2.0) -> float:
    """One ping on a new connection; how long it took."""
    t0 = time.monotonic()
    with connect(hive, name) as s:
        s.settimeout(timeout)
        s.sendall(req(1, "ping"))
        buf = b""
        while b"\n" not in buf:
            chunk = s.recv(4096)
            assert chunk, "closed"
            buf += chunk
    assert json.loads(buf)["ok"] is True
    return time.monotonic() - t0


def log_events(hive: Hive, event: str) -> list[dict[str, Any]]:
    return [e for e in hive.log_events() if e.get("event") == event]


@pytest.fixture(scope="module")
def hive(module_hive: Hive) -> Iterator[Hive]:
    """Agents with their harnesses stopped: the test is each socket's only user."""
    for name in ("sink", "evil", "good"):
        module_hive.admin("spawn", name=name)
        module_hive.admin("stop", name=name)
    yield module_hive


# --- lone surrogates --------------------------------------------------------------

async def test_lone_surrogate_sends_fail_alone_while_another_agent_sends_2000(hive: Hive) -> None:
    before_good = rows(hive, "SELECT count(*) FROM messages WHERE sender = 'good'")
    evil_r, evil_w = await asyncio.open_unix_connection(str(hive.socket("evil")))
    good_r, good_w = await asyncio.open_unix_connection(str(hive.socket("good")))
    stop = asyncio.Event()
    evil_replies: dict[str, int] = {}

    async def evil_send() -> int:
        n = 0
        while not stop.is_set():  # a tight loop, pipelined, 50 at a time
            evil_w.write(b"".join(req(n + i, "send", to="sink", body=f"x\ud800{n + i}") for i in range(50)))
            n += 50
            await evil_w.drain()
            await asyncio.sleep(0)  # drain does not yield until the transport is paused
        return n

    async def evil_read() -> None:
        while line := await evil_r.readline():
            resp = json.loads(line)
            key = "ok" if resp["ok"] else resp["error"]["code"]
            evil_replies[key] = evil_replies.get(key, 0) + 1

    async def good_send() -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []

        async def reader() -> None:
            while len(out) < 2000:
                out.append(json.loads(await good_r.readline()))
        task = asyncio.ensure_future(reader())
        for start in range(0, 2000, 100):  # 100 in flight: they share batches with the evil sends
            good_w.write(b"".join(req(i, "send", to="sink", body=f"good {i}") for i in range(start, start + 100)))
            await good_w.drain()
            while len(out) < start:
                await asyncio.sleep(0.001)
        await asyncio.wait_for(task, 30)
        return out

    evil_reading = asyncio.ensure_future(evil_read())
    evil_sending = asyncio.ensure_future(evil_send())
    await asyncio.sleep(0.05)  # the flood is on before the good sends start
    acks = await good_send()
    stop.set()
    evil_sent = await evil_sending
    # every evil send gets its refusal; the connection stays usable
    evil_w.write(req(-1, "ping"))
    await evil_w.drain()
    deadline = time.monotonic() + 10
    while evil_replies.get("bad_request", 0) < evil_sent and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    evil_w.close()
    good_w.close()
    await asyncio.wait_for(evil_reading, 10)

    assert len(acks) == 2000 and all(a["ok"] for a in acks), [a for a in acks if not a["ok"]][:3]
    assert sorted(a["id"] for a in acks) == list(range(2000))
    assert len({a["message_id"] for a in acks}) == 2000
    assert rows(hive, "SELECT count(*) FROM messages WHERE sender = 'good'") == before_good + 2000
    assert evil_sent >= 500  # it really was a flood
    assert evil_replies.get("bad_request") == evil_sent and evil_replies.get("ok") == 1  # the ping
    assert rows(hive, "SELECT count(*) FROM messages WHERE sender = 'evil'") == 0
    refusals = [e for e in log_events(hive, "socket.refused") if e.get("agent") == "evil"]
    assert "lone surrogate" in refusals[0]["error"]
    assert len(refusals) <= 10 + evil_sent.bit_length()  # the flood does not flood the log


# --- replies that are never read -------------------------------------------------------

def fill_inbox(hive: Hive, to: str, count: int, size: int) -> None:
    """``count`` messages of ``size`` bytes from good to ``to``, pipelined."""
    with connect(hive, "good") as s:
        body = "r" * size
        s.sendall(b"".join(req(i, "send", to=to, body=body) for i in range(count)))
        buf, got = b"", 0
        while got < count:
            chunk = s.recv(1 << 16)
            assert chunk, "closed"
            buf += chunk
            got = buf.count(b"\n")
    assert all(json.loads(x)["ok"] for x in buf.splitlines())


def read_until_closed(s: socket.socket, timeout: float = 10.0) -> bytes:
    s.settimeout(timeout)
    out = b""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            chunk = s.recv(1 << 20)
        except ConnectionResetError:
            return out
        if not chunk:
            return out
        out += chunk
    raise AssertionError(f"the daemon kept the connection open ({len(out)} bytes read)")


def test_pipelined_recent_never_read_stays_bounded_and_is_cut_off(hive: Hive) -> None:
    fill_inbox(hive, "sink", 500, 40_000)  # 20 MB in the sink's inbox: 500 rows a recent could take
    pid = daemon_pid(hive)
    with connect(hive, "sink") as s:  # one full read first: what a recent costs when it is read
        s.sendall(req(0, "recent", limit=1000))
        buf = b""
        while b"\n" not in buf:
            buf += s.recv(1 << 20)
    first = json.loads(buf)
    assert first["truncated"] is True and 10 < len(first["messages"]) < 500
    assert len(buf) <= MB + 1024  # about 1 MiB, the oldest rows left out
    before = rss(pid)
    cut_before = len(log_events(hive, "socket.slow_reader"))

    s = connect(hive, "sink")
    s.sendall(b"".join(req(i, "recent", limit=1000) for i in range(30)))  # and never read
    wait_for(lambda: len(log_events(hive, "socket.slow_reader")) > cut_before, timeout=10,
             what="the daemon cutting off the peer that does not read")
    grown = rss(pid) - before
    got = read_until_closed(s)
    s.close()
    answered = got.count(b"\n")
    assert grown < 50 * MB, f"daemon grew by {grown / MB:.0f} MB"
    assert answered < 30 and len(got) < 6 * MB  # cut off: the rest were never written
    [cut] = log_events(hive, "socket.slow_reader")[cut_before:]
    assert cut["agent"] == "sink" and cut["cap"] == 4 * MB
    assert ping_ok(hive, "sink") < 1.0  # the socket serves the next connection


def test_a_ping_flood_never_read_stays_bounded_and_is_cut_off(hive: Hive) -> None:
    pid = daemon_pid(hive)
    before = rss(pid)
    cut_before = len(log_events(hive, "socket.slow_reader"))
    s = connect(hive, "sink")
    s.setblocking(False)
    chunk = b"".join(req(i, "ping") for i in range(10_000))  # ~250 KB
    flood = 3_000_000 // 10_000  # 3M pings, 75 MB
    sent, cut = 0, False
    try:
        for _ in range(flood):
            view = memoryview(chunk)
            while view:
                try:
                    n = s.send(view)
                except BlockingIOError:
                    if not select.select([], [s], [], 5.0)[1]:
                        raise AssertionError("the daemon stopped reading but kept the connection") from None
                    continue
                except (BrokenPipeError, ConnectionResetError):
                    cut = True
                    break
                sent += n
                view = view[n:]
            if cut:
                break
        grown = rss(pid) - before
    finally:
        s.close()
    assert cut, "the daemon answered 3M pings nobody read"
    assert sent < len(chunk) * flood // 10, f"the daemon read {sent / MB:.0f} MB of pings before cutting off"
    assert grown < 50 * MB, f"daemon grew by {grown / MB:.0f} MB"
    [line] = log_events(hive, "socket.slow_reader")[cut_before:]
    assert line["agent"] == "sink"
    assert ping_ok(hive, "sink") < 1.0  # the loop is not wedged; other connections are served


def test_a_peer_cut_off_for_not_reading_loses_no_message(hive: Hive) -> None:
    undelivered = "SELECT count(*) FROM messages WHERE recipient = 'evil' AND delivered_at IS NULL"
    assert rows(hive, undelivered) == 0
    fill_inbox(hive, "evil", 200, 40_000)  # 8 MB: each recv takes about 1 MiB of it
    cut_before = len(log_events(hive, "socket.slow_reader"))
    s = connect(hive, "evil")
    s.sendall(b"".join(req(i, "recv", wait_seconds=0) for i in range(10)))  # and never read
    wait_for(lambda: len(log_events(hive, "socket.slow_reader")) > cut_before, timeout=10, what="the cut")
    got = read_until_closed(s)
    s.close()
    complete = [json.loads(x) for x in got.split(b"\n")[:-1]]  # what reached the peer whole
    taken = sum(len(r["messages"]) for r in complete)
    assert taken < 200
    # Every message the peer never got whole is undelivered again.
    wait_for(lambda: rows(hive, undelivered) == 200 - taken, timeout=10,
             what=f"{200 - taken} messages put back (now {rows(hive, undelivered)})")
    with connect(hive, "evil") as s2:  # and a reading client gets them all
        ids: set[int] = set()
        buf = b""
        while len(ids) < 200 - taken:
            s2.sendall(req(0, "recv", wait_seconds=0))
            while b"\n" not in buf:
                buf += s2.recv(1 << 20)
            line, buf = buf.split(b"\n", 1)
            batch = json.loads(line)["messages"]
            assert batch, "messages missing"
            ids |= {m["id"] for m in batch}
    assert not ids & {m["id"] for r in complete for m in r["messages"]}


# --- connections: the cap, and accept failing with EMFILE --------------------------------------

def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def limit_leaving(pid: int, free: int) -> int:
    """An RLIMIT_NOFILE under which ``pid`` has exactly ``free`` descriptor
    numbers left (its open descriptors above the limit stay usable)."""
    used = {int(fd) for fd in os.listdir(f"/proc/{pid}/fd")}
    spare = [n for n in range(max(used) + free + 2) if n not in used]
    return spare[free - 1] + 1


def test_connections_past_the_cap_and_emfile_do_not_hang_admin_or_flood_the_log(hive: Hive) -> None:
    from hyperhive.web.rpc.sockets import MAX_CONNECTIONS

    pid = daemon_pid(hive)
    log_before = hive.log_path.stat().st_size
    fds_before = len(os.listdir(f"/proc/{pid}/fd"))
    # Up to the cap and beyond: the cap holds, admin is not slowed.
    held = [connect(hive, "evil") for _ in range(MAX_CONNECTIONS)]
    for i, s in enumerate(held):  # each one is served
        s.sendall(req(i, "ping"))
        assert b'"ok":true' in s.recv(4096)
    beyond = [connect(hive, "evil") for _ in range(20)]
    for s in beyond:  # closed at accept
        assert s.recv(10) == b""
    t0 = time.monotonic()
    hive.admin("ls")
    assert time.monotonic() - t0 < 1.0
    for s in held + beyond:
        s.close()
    wait_for(lambda: len(os.listdir(f"/proc/{pid}/fd")) <= fds_before, timeout=5, what="the daemon closing them")

    # Again with the daemon short of file descriptors: a few connections take
    # the last ones, every further accept fails with EMFILE for as long as the
    # agent holds them.
    soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    got: dict[str, Any] = {}

    def ls() -> None:
        try:
            got["ls"] = client.request(hive.paths.admin_socket, "ls", timeout=20)
        except Exception as exc:  # noqa: BLE001 - reported below
            got["error"] = exc
        got["at"] = time.monotonic()

    held = []
    try:
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (limit_leaving(pid, 6), hard))
        held = [connect(hive, "evil") for _ in range(MAX_CONNECTIONS + 10)]  # the rest wait in the backlog
        # The dashboard (a tornado HTTPServer) meets the same shortage: it must back off too.
        dash_port = int(hive.url.rsplit(":", 1)[1])
        held += [socket.create_connection(("127.0.0.1", dash_port), timeout=5) for _ in range(3)]
        wait_for(lambda: log_events(hive, "socket.accept_failed"), timeout=5, what="the EMFILE logged")
        t = threading.Thread(target=ls, daemon=True)
        t.start()
        cpu0 = cpu_seconds(pid)
        time.sleep(1.5)  # the shortage lasts: the loop must not spin on it
        spun = cpu_seconds(pid) - cpu0
        assert "ls" not in got and "error" not in got  # admin waits in its backlog too
        let_go = time.monotonic()
        for s in held:
            s.close()
        t.join(10)
        assert "ls" in got, got.get("error")
        assert got["at"] - let_go < 1.0, f"admin ls answered {got['at'] - let_go:.2f}s after the agent let go"
    finally:
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, hard))
        for s in held:
            s.close()
    grown = hive.log_path.stat().st_size - log_before
    assert grown < MB, f"the daemon log grew by {grown / MB:.1f} MB"
    assert spun < 0.5, f"the daemon spent {spun:.2f}s of CPU in 1.5s of failing accepts"
    failed = log_events(hive, "socket.accept_failed")
    assert failed and failed[0]["errno"] == "EMFILE"
    assert len(failed) <= 4  # at most once a second
    assert ping_ok(hive, "evil") < 1.0
