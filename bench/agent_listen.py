#!/usr/bin/env python
"""Wake latency of a parked recv over the agents' TCP+TLS channel (issue 18), side by side with the
unix socket, in the same run.

Starts `hive serve --agent-listen 127.0.0.1:0` on a temp state dir, spawns two agents (`sender`,
`sink`) and stops their harnesses, so this script is the only client of their sockets, and gets
each one's relay credentials from the admin socket (`agent_link`). Three paths, each with its own
connections for sink and sender:
- unix: the agents' own hive.sock (as bench/recv_latency.py);
- tls: straight to --agent-listen over TLS 1.3 (the CA pinned, the auth line first);
- relay: the agents' relay (`hyperhive.agent_link.AgentLink`, in a process of its own as in a Ray
  actor): its unix sockets, tunnelled over TLS to the daemon.
Each iteration: park a tool-level `recv` on sink, then `send` to sink from sender; latency = from
just before the send is written until the recv's answer has been read. Blocking sockets, one thread.
The paths take turns in rounds, so a change of host load hits all three alike; the ratio of each TCP
path's p50 and p99 to the unix socket's is printed.

Run from the repo root:  .venv/bin/python bench/agent_listen.py
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import REPO, DaemonProc, LineConn, drain, host_load_note, percentile  # the script's own dir

from hyperhive.agent_wire import auth_line, client_context, parse_address

PATHS = ("unix", "tls", "relay")


class ListenDaemon(DaemonProc):
    def argv(self) -> list[str]:
        return [*super().argv(), "--agent-listen", "127.0.0.1:0"]


class TlsLineConn(LineConn):
    """`LineConn` over TLS to --agent-listen, authenticated as ``agent`` on the hive channel."""

    def __init__(self, creds: dict[str, str], timeout: float = 60.0) -> None:
        host, port = parse_address(creds["address"])
        raw = socket.create_connection((host, port), timeout)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = client_context(creds["ca_pem"]).wrap_socket(raw, server_hostname=host)
        self._buf = b""
        self._ids = itertools.count(1)
        self.sock.sendall(auth_line(creds["agent"], creds["secret"], "hive"))
        if self.read() != {"ok": True}:
            raise RuntimeError("the daemon refused the auth line")


def relay_main() -> int:
    """`agent_listen.py --relay`: the relays of the agents named on stdin (JSON: their credentials and
    run dirs; never a command line), until stdin closes."""
    from hyperhive import logs
    from hyperhive.agent_link import AgentLink

    logs.configure(sys.stderr)  # stdout says "ready"
    spec = json.loads(sys.stdin.readline())
    links = [AgentLink(c["address"], c["ca_pem"], c["agent"], c["secret"], Path(c["run_dir"])) for c in spec]
    for link in links:
        link.start()
    print("ready", flush=True)
    sys.stdin.read()
    for link in links:
        link.stop()
    return 0


def start_relays(creds: list[dict[str, str]], run_root: Path) -> tuple[subprocess.Popen[str], dict[str, Path]]:
    proc = subprocess.Popen([sys.executable, __file__, "--relay"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, cwd=REPO)  # its log: nothing to read here
    assert proc.stdin is not None and proc.stdout is not None
    dirs = {c["agent"]: run_root / c["agent"] for c in creds}
    proc.stdin.write(json.dumps([{**c, "run_dir": str(dirs[c["agent"]])} for c in creds]) + "\n")
    proc.stdin.flush()
    if proc.stdout.readline().strip() != "ready":
        raise RuntimeError("the relays did not start")
    return proc, {a: d / "hive.sock" for a, d in dirs.items()}


def stop_relays(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.close()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def wait_parked(d: DaemonProc, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while d.container("sink")["parked"]["tool"] < 1:
        if time.monotonic() > end:
            raise RuntimeError("recv on sink never parked")
        time.sleep(0.001)


def wakes(d: DaemonProc, sink: LineConn, sender: LineConn, n: int, park_delay: float, tag: str) -> list[float]:
    out: list[float] = []
    for i in range(n):
        body = f"{tag} {i}"
        rid = sink.write("recv", wait_seconds=30)
        if i == 0:
            wait_parked(d)
        else:
            time.sleep(park_delay)
        t0 = time.perf_counter_ns()
        sid = sender.write("send", to="sink", body=body)
        resp = sink.read()
        t1 = time.perf_counter_ns()
        ack = sender.read()
        if resp.get("id") != rid or not resp.get("ok") or ack.get("id") != sid or not ack.get("ok"):
            raise RuntimeError(f"recv/send failed: {resp} {ack}")
        if [m["body"] for m in resp["messages"]] != [body]:
            raise RuntimeError(f"recv got the wrong message(s): {resp['messages']}")
        out.append((t1 - t0) / 1e6)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iterations", type=int, default=1000, help="per path")
    ap.add_argument("--warmup", type=int, default=100, help="per path, before the first round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--park-delay-ms", type=float, default=2.0)
    ap.add_argument("--keep", action="store_true", help="keep the temp state dir (daemon.log)")
    args = ap.parse_args()

    print(host_load_note(skew="high"), flush=True)
    state = Path(tempfile.mkdtemp(prefix="hive-bench-listen-"))
    d = ListenDaemon(state / "state")
    relays: subprocess.Popen[str] | None = None
    conns: dict[str, tuple[LineConn, LineConn]] = {}
    try:
        d.start()
        d.spawn_stopped("sender")
        d.spawn_stopped("sink")
        creds = {a: d.admin("agent_link", name=a) for a in ("sink", "sender")}
        relays, relayed = start_relays(list(creds.values()), state / "node")
        print(f"daemon pid {d.pid}, agent-listen {creds['sink']['address']}, relays pid {relays.pid}", flush=True)
        conns = {
            "unix": (LineConn(d.agent_socket("sink")), LineConn(d.agent_socket("sender"))),
            "tls": (TlsLineConn(creds["sink"]), TlsLineConn(creds["sender"])),
            "relay": (LineConn(relayed["sink"]), LineConn(relayed["sender"])),
        }
        drain(conns["unix"][0])
        delay = args.park_delay_ms / 1000
        for path in PATHS:
            wakes(d, *conns[path], args.warmup, delay, f"warmup {path}")
        got: dict[str, list[float]] = {p: [] for p in PATHS}
        per_round = max(1, args.iterations // args.rounds)
        for r in range(args.rounds):
            for path in PATHS:
                got[path] += wakes(d, *conns[path], per_round, delay, f"{path} round {r}")
        report(got, args, per_round)
    finally:
        for pair in conns.values():
            for c in pair:
                c.close()
        if relays is not None:
            stop_relays(relays)
        d.stop()
        if not args.keep:
            shutil.rmtree(state, ignore_errors=True)
    return 0


def report(got: dict[str, list[float]], args: argparse.Namespace, per_round: int) -> None:
    stats: dict[str, tuple[float, float]] = {}
    for path in PATHS:
        w = sorted(got[path])
        stats[path] = (percentile(w, 0.5), percentile(w, 0.99))
        print(f"{path}: iterations {len(w)} ({args.rounds} rounds of {per_round}, after {args.warmup} warmup), "
              f"park delay {args.park_delay_ms:g} ms")
        for q in (0.50, 0.90, 0.99):
            print(f"  {path} p{round(q * 100)}_ms {percentile(w, q):.3f}")
        print(f"  {path} max_ms {w[-1]:.3f}")
    print("side by side, recv wake ms (p50 / p99): " + "  ".join(
        f"{p.upper()} {stats[p][0]:.3f} / {stats[p][1]:.3f}" for p in PATHS))
    unix50, unix99 = stats["unix"]
    for path in ("tls", "relay"):
        print(f"recv_wake_{path}_over_unix p50 {stats[path][0] / unix50:.2f} p99 {stats[path][1] / unix99:.2f}")
    for path in PATHS:
        print(f"recv_wake_p50_ms_{path} {stats[path][0]:.3f}")
        print(f"recv_wake_p99_ms_{path} {stats[path][1]:.3f}")


if __name__ == "__main__":
    sys.exit(relay_main() if sys.argv[1:] == ["--relay"] else main())
