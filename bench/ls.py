#!/usr/bin/env python
"""The admin `ls` with 1000 agents registered (issue 17, acceptance 5:
target `admin_ls_p50_ms < 50`).

Setup as `bench/dashboard.py`: the agents are laid out on disk by the
daemon's own code (`StatePaths.create_agent`, `config_repo.init_repo`,
`materialize`, a `containers` row with desired=stopped), then `hive serve`
boots them all: 1000 ContainerActors, all stopped; only m1nd runs.

Measured: `--requests` sequential admin `ls` requests (after 5 warm-ups),
each what `hive ls` sends, through `hyperhive.client.request` (a fresh
connection to run/admin.sock per request, the JSON decoded), from before the
connect until the reply is decoded. Reference in the same run: the admin
`ping` round trip, the cheapest op on that socket (it touches no actor and
no file), measured the same way. Also the reply's size in bytes (one raw
line read off the socket).

Run from the repo root:  .venv/bin/python bench/ls.py
"""

from __future__ import annotations

import argparse
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(REPO))

from benchlib import DaemonProc, host_load_note, percentile  # noqa: E402
from dashboard import lay_out, wait_ready  # noqa: E402

TARGET_LS_MS = 50.0
WARMUP = 5


def stats(ms: list[float]) -> str:
    s = sorted(ms)
    return (f"n={len(s)} p50={percentile(s, .5):.2f} p90={percentile(s, .9):.2f} "
            f"max={s[-1]:.2f} ms")


def timed(call: Callable[[], object], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        call()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def raw_reply_bytes(path: Path, op: str) -> int:
    """The size of one reply line as the daemon wrote it (newline included)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(60)
        s.connect(str(path))
        s.sendall(b'{"id":1,"op":"%s"}\n' % op.encode())
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(1 << 20)
            if not chunk:
                raise ConnectionError("daemon closed the connection")
            buf += chunk
    return len(buf)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--agents", type=int, default=1000)
    ap.add_argument("--requests", type=int, default=50)
    ap.add_argument("--keep", action="store_true", help="keep the temp state dir")
    ns = ap.parse_args()
    from hyperhive.client import request

    print(host_load_note())
    tmp = Path(tempfile.mkdtemp(prefix="hive-ls-bench-"))
    d = DaemonProc(tmp / "state")
    try:
        t0 = time.perf_counter()
        lay_out(d.state_dir, ns.agents)
        print(f"laid out {ns.agents} agents in {time.perf_counter() - t0:.1f} s")
        t0 = time.perf_counter()
        d.start(timeout=120)
        wait_ready(d)
        print(f"daemon up (boot of {ns.agents + 1} containers) in {time.perf_counter() - t0:.1f} s")
        admin = d.admin_path
        reply = request(admin, "ls")
        if len(reply["containers"]) != ns.agents + 1:
            raise RuntimeError(f"ls lists {len(reply['containers'])} containers, not {ns.agents + 1}")
        timed(lambda: request(admin, "ls"), WARMUP)
        ls_ms = timed(lambda: request(admin, "ls"), ns.requests)
        timed(lambda: request(admin, "ping"), WARMUP)
        ping_ms = timed(lambda: request(admin, "ping"), ns.requests)
        print(f"ls reply bytes={raw_reply_bytes(admin, 'ls')} containers={len(reply['containers'])}")
        print("admin_ls_ms  ", stats(ls_ms))
        print("admin_ping_ms", stats(ping_ms), "(reference: the cheapest admin op, no actor, no file)")
        p50 = percentile(sorted(ls_ms), .5)
        print(f"admin_ls_p50_ms {p50:.1f} (target < {TARGET_LS_MS:g}: "
              f"{'met' if p50 < TARGET_LS_MS else 'not met'})")
    finally:
        d.stop()
        if ns.keep:
            print(f"state dir kept: {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
