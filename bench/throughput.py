#!/usr/bin/env python
"""Durable sends per second through a real daemon and real unix sockets.

Starts `hive serve` on a temp state dir, spawns sender agents and sink agents
and stops all their harnesses (nobody reads the sinks' inboxes). For each
concurrency (1, 10, 100) a load generator in a separate process opens one
connection per sender on the sender agents' sockets (round-robin); each sender
sends, awaits the ack (the message is committed), and repeats. After a warmup,
acks completed inside a fixed window are counted.

Reference, on a temp file before the daemon starts: raw sqlite3, one row per
commit (BEGIN IMMEDIATE / INSERT / COMMIT, WAL, synchronous=NORMAL).

Run from the repo root:  .venv/bin/python bench/throughput.py
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import multiprocessing as mp
import os
import shutil
import signal
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchlib import DaemonProc, LineConn, drain, host_cpu, host_load_note, percentile  # noqa: E402 - the script's own dir is on sys.path

TARGET_SENDS_PER_S = 10_000
BODY = "benchmark message body " + "x" * 40


# --- the daemon under test (same helper in bench/recv_latency.py) --------------

# --- CPU accounting from /proc ---------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def _stat_cpu(path: str) -> tuple[str, float]:
    with open(path) as f:
        raw = f.read()
    comm = raw[raw.index("(") + 1:raw.rindex(")")]
    rest = raw[raw.rindex(")") + 2:].split()
    return comm, (int(rest[11]) + int(rest[12])) / _TICK  # utime + stime


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds per thread (by tid) of ``pid``."""
    out: dict[str, float] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            out[tid] = _stat_cpu(f"/proc/{pid}/task/{tid}/stat")[1]
        except (FileNotFoundError, ProcessLookupError, ValueError):
            continue
    return out


# --- reference: raw sqlite ------------------------------------------------------------

def sqlite_reference(path: Path, seconds: float) -> float:
    con = sqlite3.connect(path, isolation_level=None)
    try:
        con.execute("PRAGMA journal_mode=wal")
        con.execute("PRAGMA synchronous=normal")
        con.execute(
            "CREATE TABLE messages (id INTEGER PRIMARY KEY AUTOINCREMENT, sender VARCHAR(64) NOT NULL, "
            "recipient VARCHAR(64) NOT NULL, body TEXT NOT NULL, sent_at REAL NOT NULL, delivered_at REAL)"
        )
        con.execute("CREATE INDEX messages_rdi ON messages (recipient, delivered_at, id)")
        insert = ("INSERT INTO messages (sender, recipient, body, sent_at, delivered_at) "
                  "VALUES (?, ?, ?, ?, ?)")
        n = 0
        t0 = time.perf_counter()
        end = t0 + seconds
        while True:
            for _ in range(100):
                con.execute("BEGIN IMMEDIATE")
                con.execute(insert, ("s0", "k0", BODY, time.time(), None))
                con.execute("COMMIT")
            n += 100
            now = time.perf_counter()
            if now >= end:
                return n / (now - t0)
    finally:
        con.close()


# --- the load generator (runs in its own process) ----------------------------------

async def _load(plan: list[tuple[str, str]], start_at: float, warmup: float,
                duration: float) -> dict[str, Any]:
    """One sender per (socket path, recipient): send, await the ack, repeat."""
    conns = [await asyncio.open_unix_connection(path, limit=1 << 20) for path, _ in plan]
    w0 = start_at + warmup
    w1 = w0 + duration
    lat: list[float] = []
    counts = {"acks": 0, "errors": 0}
    cpu: dict[str, float] = {}

    async def sender(i: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, to: str) -> None:
        prefix = b'{"id":'
        tail = json.dumps({"op": "send", "to": to, "body": BODY}, separators=(",", ":"))[1:].encode()
        for rid in itertools.count(1):
            t0 = time.monotonic()
            if t0 >= w1:
                return
            writer.write(prefix + str(rid).encode() + b"," + tail + b"\n")
            line = await reader.readline()
            t1 = time.monotonic()
            if not line:
                raise ConnectionError("daemon closed the connection")
            resp = json.loads(line)
            if not resp.get("ok") or resp.get("id") != rid:
                counts["errors"] += 1
            elif w0 <= t1 < w1:
                counts["acks"] += 1
                lat.append(t1 - t0)

    async def cpu_marks() -> None:
        await asyncio.sleep(max(0.0, w0 - time.monotonic()))
        cpu["p0"] = time.process_time()
        await asyncio.sleep(max(0.0, w1 - time.monotonic()))
        cpu["p1"] = time.process_time()

    await asyncio.sleep(max(0.0, start_at - time.monotonic()))
    await asyncio.gather(
        cpu_marks(),
        *(sender(i, r, w, to) for i, ((r, w), (_, to)) in enumerate(zip(conns, plan, strict=True))),
    )
    for _, w in conns:
        w.close()
    return {"acks": counts["acks"], "errors": counts["errors"], "lat": lat,
            "cpu": cpu.get("p1", 0.0) - cpu.get("p0", 0.0)}


def _load_process(plan: list[tuple[str, str]], start_at: float, warmup: float, duration: float,
                  out: Any) -> None:
    try:
        out.send(asyncio.run(_load(plan, start_at, warmup, duration)))
    except BaseException as exc:  # noqa: BLE001 - reported by the parent
        out.send({"error": f"{type(exc).__name__}: {exc}"})
    finally:
        out.close()


def run_level(d: DaemonProc, concurrency: int, senders: list[str], sinks: list[str], procs: int,
              warmup: float, duration: float) -> dict[str, Any]:
    plan = [(str(d.agent_socket(senders[i % len(senders)])), sinks[i % len(sinks)])
            for i in range(concurrency)]
    nproc = max(1, min(procs, concurrency))
    parts = [plan[p::nproc] for p in range(nproc)]
    ctx = mp.get_context("spawn")
    start_at = time.monotonic() + 1.5  # time for the children to start and connect
    children = []
    for part in parts:
        rx, tx = ctx.Pipe(duplex=False)
        p = ctx.Process(target=_load_process, args=(part, start_at, warmup, duration, tx), daemon=True)
        p.start()
        tx.close()
        children.append((p, rx))
    results = []
    try:
        # Daemon and host CPU over the measured window.
        time.sleep(max(0.0, start_at + warmup - time.monotonic()))
        d0, h0 = thread_cpu(d.pid), host_cpu()
        time.sleep(max(0.0, start_at + warmup + duration - time.monotonic()))
        d1, h1 = thread_cpu(d.pid), host_cpu()
        for p, rx in children:
            try:
                if not rx.poll(30):
                    raise RuntimeError("load generator did not report")
                results.append(rx.recv())
            except EOFError:
                raise RuntimeError(f"load generator died (exit code {p.exitcode})") from None
            p.join(10)
    finally:
        for p, _ in children:
            if p.is_alive():
                os.kill(p.pid, signal.SIGKILL)  # only our own child, by pid
                p.join(5)
    for r in results:
        if "error" in r:
            raise RuntimeError(f"load generator failed: {r['error']}")
    lat = sorted(x for r in results for x in r["lat"])
    acks = sum(r["acks"] for r in results)
    return {
        "concurrency": concurrency, "procs": nproc, "acks": acks,
        "errors": sum(r["errors"] for r in results), "rate": acks / duration,
        "lat": lat, "client_cpu": sum(r["cpu"] for r in results) / duration,
        "daemon_threads": {k: (v - d0.get(k, 0.0)) / duration for k, v in d1.items()},
        "host_busy": (h1[0] - h0[0]) / max(1, h1[1] - h0[1]),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--concurrency", default="1,10,100", help="comma-separated sender counts")
    ap.add_argument("--duration", type=float, default=8.0, help="measured seconds per concurrency")
    ap.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds first")
    ap.add_argument("--sender-agents", type=int, default=4)
    ap.add_argument("--sink-agents", type=int, default=4)
    ap.add_argument("--procs", type=int, default=1, help="load generator processes (at most one per sender)")
    ap.add_argument("--sqlite-seconds", type=float, default=3.0)
    ap.add_argument("--keep", action="store_true", help="keep the temp state dir (daemon.log)")
    args = ap.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]

    base = Path(tempfile.mkdtemp(prefix="hive-bench-tp-"))
    print(host_load_note(), flush=True)
    d = DaemonProc(base / "hive")
    total_acks = 0
    out: dict[int, float] = {}
    try:
        raw = sqlite_reference(base / "raw.sqlite", args.sqlite_seconds)
        print(f"sqlite_single_commit_inserts_per_s {raw:.0f}  (raw sqlite3, 1 row/commit, WAL, "
              f"synchronous=NORMAL, {os.cpu_count()} CPUs)", flush=True)
        d.start()
        senders = [f"snd{i}" for i in range(args.sender_agents)]
        sinks = [f"sink{i}" for i in range(args.sink_agents)]
        for name in senders + sinks:
            d.spawn_stopped(name)
        for name in sinks:
            c = LineConn(d.agent_socket(name))
            drain(c)
            c.close()
        print(f"daemon pid {d.pid}, {len(senders)} sender agents, {len(sinks)} sinks, harnesses stopped",
              flush=True)
        for c in levels:
            r = run_level(d, c, senders, sinks, args.procs, args.warmup, args.duration)
            total_acks += r["acks"]
            out[c] = r["rate"]
            lat = r["lat"]
            busiest = sorted(r["daemon_threads"].values(), reverse=True)[:3]
            threads = "busiest threads " + " / ".join(f"{v:.0%}" for v in busiest)
            daemon_cpu = sum(r["daemon_threads"].values())
            per_send = daemon_cpu / r["rate"] * 1e6 if r["rate"] else float("nan")
            print(f"sends_per_s c={c}: {r['rate']:.0f}", flush=True)
            print(f"  daemon cpu per send {per_send:.0f} us (about {1e6 / per_send:.0f} sends/s "
                  f"at 100% of one core)", flush=True)
            print(f"  ack latency ms p50 {percentile(lat, .5) * 1e3:.2f} p99 {percentile(lat, .99) * 1e3:.2f}"
                  f" max {lat[-1] * 1e3:.2f}; errors {r['errors']}; cpu: daemon "
                  f"{daemon_cpu:.0%} ({threads}), load generator "
                  f"{r['client_cpu']:.0%} in {r['procs']} proc(s), host busy {r['host_busy']:.0%}",
                  flush=True)
        # Every ack means a committed row: the sinks' undelivered counts must add up.
        stored = sum(c["undelivered"] for c in d.admin("ls")["containers"] if c["name"] in sinks)
        print(f"stored check: {stored} undelivered rows in the sinks' inboxes >= {total_acks} acks counted: "
              f"{'ok' if stored >= total_acks else 'MISMATCH'}")
    finally:
        d.stop()
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)

    if 100 in out:
        print(f"sends_per_s_100 {out[100]:.0f}")
        met = out[100] >= TARGET_SENDS_PER_S
        print(f"target sends_per_s_100 >= {TARGET_SENDS_PER_S}: {'MET' if met else 'NOT MET'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
