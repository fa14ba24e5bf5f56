#!/usr/bin/env python
"""Latency the model API gateway adds to a streamed request, on loopback.

Starts the scripted Anthropic server (tests/fake_anthropic.py) on TCP and on a
unix socket, then, on one event loop of their own (as in the daemon and the
harness): the gateway on a unix socket forwarding to the fake over TCP, a TCP
relay in front of it (what the harness runs inside the sandbox) and, for
reference, a TCP relay straight to the fake's unix socket. A blocking client
in this thread (no event loop in the measured path) fires N small streamed
requests, sequentially and interleaved, over three keep-alive connections:

    direct      client → fake (TCP)
    relay       client → TCP relay → fake (unix socket)
    gateway     client → TCP relay → gateway (unix socket) → fake (TCP)

Each request: POST /v1/messages with ``stream: true``; its time runs from
just before the request is written until the last SSE event has been read
(``first`` is until the first body bytes). The added latency is gateway −
direct of the same iteration. The gateway opens a new upstream connection per
request (tornado's simple client keeps none alive), which is included.

Run from the repo root:  .venv/bin/python bench/gateway.py
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import logging
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchlib import REPO, host_load_note, percentile  # noqa: E402 - the script's own dir is on sys.path

sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

import tornado.netutil  # noqa: E402
from fake_anthropic import FakeAnthropic, Reply, text  # noqa: E402

import hyperhive.logs  # noqa: E402
from hyperhive.sandbox.gateway import ApiGateway, Upstream  # noqa: E402
from hyperhive.sandbox.relay import bound_port, start_tcp_relay, stop_server, unix_connector  # noqa: E402

BODY = json.dumps({"model": "claude-bench", "stream": True, "max_tokens": 16,
                   "messages": [{"role": "user", "content": "hi"}]}).encode()


class Plumbing:
    """Gateway and relays on their own thread and loop (the daemon's side and the harness's)."""

    def __init__(self, fake: FakeAnthropic, fake_sock: Path, gw_sock: Path) -> None:
        self.fake, self.fake_sock, self.gw_sock = fake, fake_sock, gw_sock
        self.gateway_port = 0
        self.relay_port = 0
        self.usage: list[dict[str, Any]] = []
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), name="plumbing", daemon=True)

    async def _run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        gateway = ApiGateway(Upstream(self.fake.base_url, {"x-api-key": "sk-bench"}),
                             on_usage=lambda agent, rec: self.usage.append(rec))
        gateway.open("bench", tornado.netutil.bind_unix_socket(str(self.gw_sock)))
        to_gateway = await start_tcp_relay("127.0.0.1", 0, unix_connector(str(self.gw_sock)), "api")
        to_fake = await start_tcp_relay("127.0.0.1", 0, unix_connector(str(self.fake_sock)), "ref")
        self.gateway_port, self.relay_port = bound_port(to_gateway), bound_port(to_fake)
        self._ready.set()
        await self._stop.wait()
        await stop_server(to_gateway)
        await stop_server(to_fake)
        gateway.close_all()
        await gateway.wait_closed()

    def start(self) -> Plumbing:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("gateway did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


def one(conn: http.client.HTTPConnection) -> tuple[float, float]:
    """(ms to the first body bytes, ms to the end of the stream) of one streamed request."""
    t0 = time.perf_counter_ns()
    conn.request("POST", "/v1/messages?beta=true", body=BODY,
                 headers={"content-type": "application/json", "x-api-key": "placeholder"})
    resp = conn.getresponse()
    first = resp.read1(65536)
    t1 = time.perf_counter_ns()
    rest = resp.read()
    t2 = time.perf_counter_ns()
    body = first + rest
    if resp.status != 200 or not body.rstrip().endswith(b'{"type": "message_stop"}'):
        raise RuntimeError(f"bad response {resp.status}: {body[-200:]!r}")
    return (t1 - t0) / 1e6, (t2 - t0) / 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=30)
    args = ap.parse_args()

    hyperhive.logs.configure(stream=sys.stderr, level=logging.WARNING)  # no gateway.request line per request
    print(host_load_note(skew="high"), flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="hive-bench-gw-"))
    fake = FakeAnthropic(lambda body: Reply([text("ok")]), unix_socket=tmp / "fake.sock").start()
    plumbing = Plumbing(fake, tmp / "fake.sock", tmp / "gw.sock").start()
    names = ("direct", "relay", "gateway")
    conns = {
        "direct": http.client.HTTPConnection("127.0.0.1", fake.port, timeout=30),
        "relay": http.client.HTTPConnection("127.0.0.1", plumbing.relay_port, timeout=30),
        "gateway": http.client.HTTPConnection("127.0.0.1", plumbing.gateway_port, timeout=30),
    }
    first: dict[str, list[float]] = {n: [] for n in names}
    total: dict[str, list[float]] = {n: [] for n in names}
    added: list[float] = []
    try:
        for i in range(args.warmup + args.requests):
            got = {n: one(conns[n]) for n in names}
            if i >= args.warmup:
                for n in names:
                    first[n].append(got[n][0])
                    total[n].append(got[n][1])
                added.append(got["gateway"][1] - got["direct"][1])
    finally:
        for c in conns.values():
            c.close()
        plumbing.stop()
        fake.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    reported = sum(1 for rec in plumbing.usage if rec.get("output_tokens") == 7 and rec.get("status") == 200)
    print(f"requests {args.requests} per path (after {args.warmup} warmup), sequential, interleaved; "
          f"gateway usage records with tokens: {reported}/{args.warmup + args.requests}")
    for n in names:
        f, t = sorted(first[n]), sorted(total[n])
        print(f"{n:8s} total_ms p50 {percentile(t, 0.5):.3f} p99 {percentile(t, 0.99):.3f} max {t[-1]:.3f}"
              f"   first_bytes_ms p50 {percentile(f, 0.5):.3f} p99 {percentile(f, 0.99):.3f}")
    a = sorted(added)
    print(f"added_ms (gateway - direct, per request) p50 {percentile(a, 0.5):.3f} p90 {percentile(a, 0.9):.3f} "
          f"p99 {percentile(a, 0.99):.3f}")
    r = sorted(x - y for x, y in zip(total["relay"], total["direct"], strict=True))
    print(f"ref relay_only_added_ms (relay - direct) p50 {percentile(r, 0.5):.3f} p99 {percentile(r, 0.99):.3f}")
    print(f"gateway_added_p50_ms {percentile(a, 0.5):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
