#!/usr/bin/env python
"""What counting usage costs (issue 15): the gateway's latency and the
daemon's CPU, with and without the spend table and the Ledger behind it.

Two gateways on one event loop of their own (as in the daemon), both
forwarding to the scripted Anthropic server (tests/fake_anthropic.py) over
TCP, both reached through a TCP relay as the harness reaches them:

    plain     on_usage appends the record to a list; no guard
    costed    the daemon's wiring: on_usage → Spend.record (priced, its
              turn, the budget checks) → the Ledger actor writes the row
              into a real hive.sqlite; the gateway asks Spend before each
              call (refusal) and on each usage event of the stream (cut);
              the agent has a budget, so every check is made

Requests alternate between the two (sequential, keep-alive). Latency: the
added ms per request (costed − plain, same iteration), p50 beside the noise
of the same measurement between two plain requests. CPU: the loop thread's
and the Ledger thread's CPU over blocks of "turns" (a turn: turn_started,
CALLS_PER_TURN streamed calls, turn_ended on the costed side; the plain side
makes the same calls), from /proc's per-thread counters. The baseline turn
holds only the gateway's own work (no broker, no messages), so the percentage
is an upper bound of what counting adds to a real turn.

Targets: costed_added_p50_ms < 0.5 and cpu_added_per_turn_pct < 5.
Run from the repo root:  .venv/bin/python bench/usage_cost.py
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import logging
import os
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
from hyperhive.actors.bridge import Handle  # noqa: E402
from hyperhive.actors.ledger import Ledger  # noqa: E402
from hyperhive.budgets import Budget  # noqa: E402
from hyperhive.pricing import DEFAULT_PRICES, Price  # noqa: E402
from hyperhive.sandbox.gateway import ApiGateway, Upstream  # noqa: E402
from hyperhive.sandbox.relay import bound_port, start_tcp_relay, stop_server, unix_connector  # noqa: E402
from hyperhive.store.models import open_hive_db  # noqa: E402
from hyperhive.web.tables.spend import Spend  # noqa: E402

MODEL = "claude-bench"
BODY = json.dumps({"model": MODEL, "stream": True, "max_tokens": 16,
                   "messages": [{"role": "user", "content": "hi"}]}).encode()
CALLS_PER_TURN = 3
TICK = os.sysconf("SC_CLK_TCK")


def thread_cpu(tid: int) -> float:
    """Seconds of CPU (user + system) a thread of this process has used."""
    fields = Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


class Plumbing:
    def __init__(self, fake: FakeAnthropic, tmp: Path) -> None:
        self.fake, self.tmp = fake, tmp
        self.ports: dict[str, int] = {}
        self.loop_tid = 0
        self.plain_usage: list[dict[str, Any]] = []
        self.db = open_hive_db(tmp / "hive.sqlite")
        self.ledger = Ledger.start(self.db).proxy()
        self.ledger_tid = 0
        self.spend: Spend | None = None
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), name="plumbing", daemon=True)

    async def _run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self.loop_tid = threading.get_native_id()
        book = Handle(self.ledger)
        prices = {**DEFAULT_PRICES, MODEL: Price.of(3.0, 15.0)}
        spend = self.spend = Spend(
            prices, lambda agent: Budget(1e6, "day"), Budget(1e6, "day"),
            record=lambda row: book.tell(Ledger.record_call, row),
            turns=lambda what, turn, agent, at, rep, extra: book.tell(
                Ledger.turn_started, turn, agent, at) if what == "start" else book.tell(
                Ledger.turn_ended, turn, at, rep, extra))
        plain = ApiGateway(Upstream(self.fake.base_url, {"x-api-key": "sk-bench"}),
                           on_usage=lambda agent, rec: self.plain_usage.append(rec))
        costed = ApiGateway(Upstream(self.fake.base_url, {"x-api-key": "sk-bench"}),
                            on_usage=lambda agent, rec: spend.record(agent, rec), guard=spend)
        relays = []
        for name, gw in (("plain", plain), ("costed", costed)):
            sock = self.tmp / f"{name}.sock"
            gw.open("bench", tornado.netutil.bind_unix_socket(str(sock)))
            relay = await start_tcp_relay("127.0.0.1", 0, unix_connector(str(sock)), name)
            relays.append(relay)
            self.ports[name] = bound_port(relay)
        self._ready.set()
        await self._stop.wait()
        for relay in relays:
            await stop_server(relay)
        for gw in (plain, costed):
            gw.close_all()
            await gw.wait_closed()

    def on_loop(self, fn: Any) -> None:
        assert self._loop is not None
        done = threading.Event()
        self._loop.call_soon_threadsafe(lambda: (fn(), done.set()))
        done.wait(10)

    def start(self) -> Plumbing:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("gateways did not start")
        threads = [t for t in threading.enumerate() if t.name.startswith("Ledger")]
        if len(threads) != 1 or threads[0].native_id is None:
            raise RuntimeError(f"cannot tell the Ledger's thread: {threads}")
        self.ledger_tid = threads[0].native_id
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
        self.ledger.actor_ref.stop(block=True, timeout=10)


def one(conn: http.client.HTTPConnection) -> float:
    t0 = time.perf_counter_ns()
    conn.request("POST", "/v1/messages?beta=true", body=BODY,
                 headers={"content-type": "application/json", "x-api-key": "placeholder"})
    resp = conn.getresponse()
    body = resp.read()
    if resp.status != 200 or not body.rstrip().endswith(b'{"type": "message_stop"}'):
        raise RuntimeError(f"bad response {resp.status}: {body[-200:]!r}")
    return (time.perf_counter_ns() - t0) / 1e6


def proc_cpu(pid: int) -> float:
    """Seconds of CPU a process (all its threads) has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def daemon_turns(turns: int) -> tuple[float, float] | None:
    """A real daemon, a claude agent (the real CLI) answering the scripted server: the daemon's CPU
    per turn in ms, and the model calls per turn. None without the CLI."""
    from turn_start import ClaudeDaemon, Events, passable, wait_idle

    if shutil.which("claude") is None:
        return None
    tmp = Path(tempfile.mkdtemp(prefix="hive-bench-usage-d-"))
    passable(tmp)
    fake = FakeAnthropic(lambda body: Reply([text("ok")], model=MODEL)).start()
    saved = dict(os.environ)
    os.environ.update(fake.env())
    sandbox = "on" if os.geteuid() == 0 and shutil.which("bwrap") else "off"
    d = ClaudeDaemon(tmp / "state", sandbox)
    ev = Events(d.state_dir / "agents" / "solo" / "state" / "hyperhive-events.sqlite")
    try:
        d.start()
        d.admin("spawn", name="solo")
        wait_idle(d, "solo", ev, timeout=90)
        for i in range(2):  # warm up
            ev.skip_to_now()
            d.admin("send", to="solo", body=f"warm {i}")
            ev.wait("turn_end", time.monotonic() + 60)
            wait_idle(d, "solo", ev)
        calls0, cpu0 = sum(1 for r in fake.requests if r.method == "POST"), proc_cpu(d.pid)
        for i in range(turns):
            ev.skip_to_now()
            d.admin("send", to="solo", body=f"turn {i}: say ok")
            ev.wait("turn_end", time.monotonic() + 60)
            wait_idle(d, "solo", ev)
        cpu = (proc_cpu(d.pid) - cpu0) / turns * 1000
        calls = (sum(1 for r in fake.requests if r.method == "POST") - calls0) / turns
    finally:
        ev.close()
        d.stop()
        fake.stop()
        os.environ.clear()
        os.environ.update(saved)
        shutil.rmtree(tmp, ignore_errors=True)
    return cpu, calls


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=300, help="latency: requests per path")
    ap.add_argument("--turns", type=int, default=200, help="CPU: turns per path per round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--daemon-turns", type=int, default=20, help="real-daemon turns for the CPU baseline")
    args = ap.parse_args()

    hyperhive.logs.configure(stream=sys.stderr, level=logging.WARNING)
    print(host_load_note(skew="high"), flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="hive-bench-usage-"))
    fake = FakeAnthropic(lambda body: Reply([text("ok")], input_tokens=1200, output_tokens=80,
                                            model=MODEL)).start()
    p = Plumbing(fake, tmp).start()
    conns = {n: http.client.HTTPConnection("127.0.0.1", p.ports[n], timeout=30) for n in ("plain", "costed")}
    try:
        for _ in range(30):  # warm up both paths
            one(conns["plain"])
            one(conns["costed"])
        added, noise = [], []
        for _ in range(args.requests):
            a, b, c = one(conns["plain"]), one(conns["costed"]), one(conns["plain"])
            added.append(b - a)
            noise.append(c - a)
        cpu: dict[str, list[float]] = {"plain": [], "costed": []}
        ledger_cpu: list[float] = []
        for _ in range(args.rounds):
            for name in ("plain", "costed"):
                before = thread_cpu(p.loop_tid) + thread_cpu(p.ledger_tid)
                ledger_before = thread_cpu(p.ledger_tid)
                for _t in range(args.turns):
                    if name == "costed":
                        p.on_loop(lambda: p.spend.turn_started("bench"))  # type: ignore[union-attr]
                    for _c in range(CALLS_PER_TURN):
                        one(conns[name])
                    if name == "costed":
                        p.on_loop(lambda: p.spend.turn_ended("bench", 0.01))  # type: ignore[union-attr]
                time.sleep(0.2)  # the Ledger's last writes of the block
                cpu[name].append((thread_cpu(p.loop_tid) + thread_cpu(p.ledger_tid) - before) / args.turns)
                if name == "costed":
                    ledger_cpu.append((thread_cpu(p.ledger_tid) - ledger_before) / args.turns)
    finally:
        for c in conns.values():
            c.close()
        p.stop()
        fake.stop()
    from hyperhive.store import usage as store
    summary = store.summary(p.db, None)
    shutil.rmtree(tmp, ignore_errors=True)
    calls = summary.get("bench", {}).get("calls", 0)
    want = 30 + args.requests + args.rounds * args.turns * CALLS_PER_TURN
    print(f"costed calls recorded in hive.sqlite: {calls}/{want}")
    a, n = sorted(added), sorted(noise)
    print(f"added_ms (costed - plain, per request) p50 {percentile(a, 0.5):.3f} p90 {percentile(a, 0.9):.3f}")
    print(f"ref noise_ms (plain - plain)          p50 {percentile(n, 0.5):.3f} p90 {percentile(n, 0.9):.3f}")
    plain_ms = sorted(x * 1000 for x in cpu["plain"])
    costed_ms = sorted(x * 1000 for x in cpu["costed"])
    base, with_costs = plain_ms[0], costed_ms[0]  # the least disturbed round of each
    pct = (with_costs - base) / base * 100 if base else float("nan")
    print(f"cpu_ms_per_turn ({CALLS_PER_TURN} calls, best round) plain {base:.3f} costed {with_costs:.3f} "
          f"(rounds: plain {', '.join(f'{x:.3f}' for x in plain_ms)}; "
          f"costed {', '.join(f'{x:.3f}' for x in costed_ms)})")
    print(f"of which the Ledger thread (sqlite writes) per turn: "
          f"{percentile(sorted(x * 1000 for x in ledger_cpu), 0.5):.3f} ms")
    print(f"micro: the gateway's own work per turn +{pct:.1f}% with counting (plain {base:.3f} ms)")
    added_per_call = (with_costs - base) / CALLS_PER_TURN
    real = daemon_turns(args.daemon_turns) if args.daemon_turns > 0 else None
    print(f"costed_added_p50_ms {percentile(a, 0.5):.3f} (target < 0.5)")
    if real is None:
        print("cpu_added_per_turn_pct n/a (no claude CLI for the real-daemon baseline)")
        return 0
    daemon_ms, calls = real
    added = added_per_call * calls
    print(f"real daemon (claude CLI, {args.daemon_turns} turns): {daemon_ms:.1f} ms CPU per turn with counting, "
          f"{calls:.1f} model calls per turn; counting's share: {added:.2f} ms")
    print(f"cpu_added_per_turn_pct {added / (daemon_ms - added) * 100:.1f} (target < 5)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
