#!/usr/bin/env python
"""Durable sends per second through a real daemon and real unix sockets.

Starts two `hive serve`s on temp state dirs, one with `--db-synchronous
normal` and one with `--db-synchronous full` (the default: every acknowledged
send survives power loss), spawns sender agents and sink agents on each and
stops all their harnesses (nobody reads the sinks' inboxes). For each
concurrency (1, 10, 100), NORMAL then FULL, a load generator in a separate
process opens one connection per sender on the sender agents' sockets
(round-robin); each sender sends, awaits the ack (the message is committed),
and repeats. After a warmup, acks completed inside a fixed window are
counted. The two modes are measured level by level in the same run, so host
load drifts hit both alike; the end is a side-by-side table and the ratio.

Reference, on a temp file before the daemons start: raw sqlite3, one row per
commit (BEGIN IMMEDIATE / INSERT / COMMIT, WAL), with synchronous=NORMAL and
with synchronous=FULL.

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

from benchlib import LineConn, SyncDaemon, drain, host_cpu, host_load_note, percentile  # noqa: E402 - the script's own dir is on sys.path

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

def sqlite_reference(path: Path, seconds: float, synchronous: str) -> float:
    con = sqlite3.connect(path, isolation_level=None)
    try:
        con.execute("PRAGMA journal_mode=wal")
        con.execute(f"PRAGMA synchronous={synchronous}")
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


def sync_latency(path: Path, seconds: float) -> list[float]:
    """Sorted seconds of fdatasync after a 4 KiB append: what each FULL commit waits for at least."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    lat: list[float] = []
    try:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            os.write(fd, b"x" * 4096)
            t0 = time.perf_counter()
            os.fdatasync(fd)
            lat.append(time.perf_counter() - t0)
    finally:
        os.close(fd)
    return sorted(lat)


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


def run_level(d: SyncDaemon, concurrency: int, senders: list[str], sinks: list[str], procs: int,
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


# --- the two daemons and the report ---------------------------------------------------

MODES = ("normal", "full")


def bring_up(d: SyncDaemon, senders: list[str], sinks: list[str]) -> None:
    d.start()
    for name in senders + sinks:
        d.spawn_stopped(name)
    for name in sinks:
        c = LineConn(d.agent_socket(name))
        drain(c)
        c.close()
    print(f"daemon {d.synchronous}: pid {d.pid}, hive.sqlite opened synchronous={d.opened_as()}, "
          f"{len(senders)} sender agents, {len(sinks)} sinks, harnesses stopped", flush=True)


def report_level(mode: str, r: dict[str, Any]) -> None:
    lat = r["lat"]
    busiest = sorted(r["daemon_threads"].values(), reverse=True)[:3]
    threads = "busiest threads " + " / ".join(f"{v:.0%}" for v in busiest)
    daemon_cpu = sum(r["daemon_threads"].values())
    per_send = daemon_cpu / r["rate"] * 1e6 if r["rate"] else float("nan")
    print(f"sends_per_s c={r['concurrency']} {mode}: {r['rate']:.0f}", flush=True)
    print(f"  daemon cpu per send {per_send:.0f} us (about {1e6 / per_send:.0f} sends/s "
          f"at 100% of one core)", flush=True)
    print(f"  ack latency ms p50 {percentile(lat, .5) * 1e3:.2f} p99 {percentile(lat, .99) * 1e3:.2f}"
          f" max {lat[-1] * 1e3:.2f}; errors {r['errors']}; cpu: daemon "
          f"{daemon_cpu:.0%} ({threads}), load generator "
          f"{r['client_cpu']:.0%} in {r['procs']} proc(s), host busy {r['host_busy']:.0%}",
          flush=True)


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else "n/a"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--concurrency", default="1,10,100", help="comma-separated sender counts")
    ap.add_argument("--modes", default=",".join(MODES), help="comma-separated --db-synchronous values")
    ap.add_argument("--duration", type=float, default=8.0, help="measured seconds per concurrency and mode")
    ap.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds first")
    ap.add_argument("--sender-agents", type=int, default=4)
    ap.add_argument("--sink-agents", type=int, default=4)
    ap.add_argument("--procs", type=int, default=1, help="load generator processes (at most one per sender)")
    ap.add_argument("--sqlite-seconds", type=float, default=3.0, help="per mode")
    ap.add_argument("--keep", action="store_true", help="keep the temp state dirs (daemon.log)")
    args = ap.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    modes = [m for m in args.modes.split(",") if m]
    if not modes or set(modes) - set(MODES):
        ap.error(f"--modes takes {', '.join(MODES)}")

    base = Path(tempfile.mkdtemp(prefix="hive-bench-tp-"))
    print(host_load_note(), flush=True)
    daemons = {m: SyncDaemon(base / f"hive-{m}", m) for m in modes}
    total_acks = dict.fromkeys(modes, 0)
    out: dict[str, dict[int, float]] = {m: {} for m in modes}
    raw: dict[str, float] = {}
    senders = [f"snd{i}" for i in range(args.sender_agents)]
    sinks = [f"sink{i}" for i in range(args.sink_agents)]
    try:
        for m in modes:
            raw[m] = sqlite_reference(base / f"raw-{m}.sqlite", args.sqlite_seconds, m)
            print(f"sqlite_single_commit_inserts_per_s {m} {raw[m]:.0f}  (raw sqlite3, 1 row/commit, WAL, "
                  f"synchronous={m.upper()}, {os.cpu_count()} CPUs)", flush=True)
        sync = sync_latency(base / "sync.probe", 1.0)
        print(f"disk sync (fdatasync of a 4 KiB append) ms p50 {percentile(sync, .5) * 1e3:.2f} "
              f"p90 {percentile(sync, .9) * 1e3:.2f} p99 {percentile(sync, .99) * 1e3:.2f}", flush=True)
        for d in daemons.values():
            bring_up(d, senders, sinks)
        for c in levels:
            for m, d in daemons.items():  # level by level: both modes see the same host
                r = run_level(d, c, senders, sinks, args.procs, args.warmup, args.duration)
                total_acks[m] += r["acks"]
                out[m][c] = r["rate"]
                report_level(m, r)
        # Every ack means a committed row: the sinks' undelivered counts must add up.
        for m, d in daemons.items():
            stored = sum(c["undelivered"] for c in d.admin("ls")["containers"] if c["name"] in sinks)
            print(f"stored check {m}: {stored} undelivered rows in the sinks' inboxes >= {total_acks[m]} acks "
                  f"counted: {'ok' if stored >= total_acks[m] else 'MISMATCH'}")
    finally:
        for d in daemons.values():
            d.stop()
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
        else:
            print(f"kept {base}")

    both = len(modes) == 2
    print("side by side, sends/s:" + "".join(f"  {m.upper():>8}" for m in modes)
          + ("  FULL/NORMAL" if both else ""))
    rows = [("sqlite 1 row/commit", raw)] + [(f"c={c}", {m: out[m][c] for m in modes}) for c in levels]
    for label, vals in rows:
        print(f"  {label:<20}" + "".join(f"  {vals[m]:>8.0f}" for m in modes)
              + (f"  {ratio(vals['full'], vals['normal']):>11}" if both else ""))
    if 100 in levels:
        for m in modes:
            print(f"sends_per_s_100_{m} {out[m][100]:.0f}")
        if "full" in modes:
            met = out["full"][100] >= TARGET_SENDS_PER_S
            print(f"target sends_per_s_100_full >= {TARGET_SENDS_PER_S}: {'MET' if met else 'NOT MET'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
