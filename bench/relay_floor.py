#!/usr/bin/env python
"""A Python relay floor for a parked recv's wake (issue 17, acceptance 4).

The least a Python server must do for what `recv_latency.py` measures: one
asyncio process with two unix sockets (`sink.sock`, `sender.sock`) speaking
the same JSON lines; a `recv` parks; a `send` is committed to sqlite (WAL,
one row per commit, at the given `synchronous`) on a worker thread, then
handed to the parked recv and acked. No actors, no checks, no batching: the
floor a daemon in Python can be compared with.

`measure_floor` starts it as a subprocess (as the daemon is one) and times
the same loop as recv_latency: park a recv on sink (a ping behind it says it
is), sit idle for the park delay, write a send on sender, until the recv's
response has been read.

Run alone:  .venv/bin/python bench/relay_floor.py  (prints its p50/p99)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchlib import LineConn, percentile  # noqa: E402 - the script's own dir is on sys.path


async def serve(root: Path, synchronous: str) -> None:
    db = sqlite3.connect(root / "floor.sqlite", check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={synchronous}")
    db.execute("CREATE TABLE m (id INTEGER PRIMARY KEY, recipient TEXT, body TEXT, sent_at REAL)")
    parked: dict[str, list[tuple[asyncio.StreamWriter, Any]]] = {"sink": [], "sender": []}
    loop = asyncio.get_running_loop()

    def commit(to: str, body: str) -> tuple[int, float]:
        now = time.time()
        cur = db.execute("INSERT INTO m (recipient, body, sent_at) VALUES (?, ?, ?)", (to, body, now))
        return int(cur.lastrowid or 0), now

    def handler(me: str) -> Any:
        async def conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while line := await reader.readline():
                req = json.loads(line)
                if req["op"] == "recv":
                    parked[me].append((writer, req["id"]))
                elif req["op"] == "send":
                    mid, at = await loop.run_in_executor(None, commit, req["to"], req["body"])
                    waiting = parked.get(req["to"])
                    if waiting:
                        w, rid = waiting.pop(0)
                        msg = {"id": mid, "from": me, "to": req["to"], "body": req["body"], "sent_at": at,
                               "delivered_at": at}
                        w.write(json.dumps({"id": rid, "ok": True, "messages": [msg]}).encode() + b"\n")
                    writer.write(json.dumps({"id": req["id"], "ok": True, "message_id": mid}).encode() + b"\n")
                else:
                    writer.write(json.dumps({"id": req["id"], "ok": True}).encode() + b"\n")

        return conn

    servers = [await asyncio.start_unix_server(handler(n), path=str(root / f"{n}.sock")) for n in parked]
    (root / "ready").write_text("1")
    await asyncio.gather(*(s.serve_forever() for s in servers))


def measure_floor(iterations: int, warmup: int, synchronous: str = "FULL", park_delay: float = 0.0) -> list[float]:
    """Sorted wake latencies (ms) through the floor, started as a subprocess."""
    with tempfile.TemporaryDirectory(prefix="hh-floor-") as tmp:
        root = Path(tmp)
        proc = subprocess.Popen([sys.executable, __file__, "--serve", str(root), "--synchronous", synchronous])
        try:
            end = time.monotonic() + 30
            while not (root / "ready").exists():
                if time.monotonic() > end or proc.poll() is not None:
                    raise RuntimeError("the floor server did not start")
                time.sleep(0.01)
            sink, sender = LineConn(root / "sink.sock"), LineConn(root / "sender.sock")
            wake: list[float] = []
            for i in range(warmup + iterations):
                rid = sink.write("recv", wait_seconds=30)
                sink.call("ping")  # the recv is parked once the ping behind it is answered
                if park_delay:
                    time.sleep(park_delay)
                t0 = time.perf_counter_ns()
                sender.write("send", to="sink", body=f"ping {i}")
                resp = sink.read()
                t1 = time.perf_counter_ns()
                sender.read()
                if resp.get("id") != rid:
                    raise RuntimeError(f"floor recv failed: {resp}")
                if i >= warmup:
                    wake.append((t1 - t0) / 1e6)
            sink.close()
            sender.close()
        finally:
            proc.terminate()
            proc.wait(10)
    return sorted(wake)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--synchronous", default="FULL", choices=("FULL", "NORMAL"))
    ap.add_argument("--iterations", type=int, default=1000)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--park-delay-ms", type=float, default=2.0, help="idle pause after the park (as recv_latency)")
    args = ap.parse_args()
    if args.serve is not None:
        asyncio.run(serve(args.serve, args.synchronous))
        return 0
    w = measure_floor(args.iterations, args.warmup, args.synchronous, args.park_delay_ms / 1000)
    print(f"relay_floor_wake_ms synchronous={args.synchronous} p50={percentile(w, 0.5):.3f} "
          f"p99={percentile(w, 0.99):.3f} max={w[-1]:.3f} n={len(w)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
