#!/usr/bin/env python
"""What hibernation saves and what a wake costs, builtin agents (issue 17, acceptance 2).

Starts two `hive serve` on temp state dirs (sandboxed when this host can: root
and bubblewrap; `--sandbox`): `hibernating` with `--hibernate-after-seconds
--hibernate-after` (3) and, for reference in the same run, `awake` with
`--hibernate-after-seconds 0` (never). Each gets `--agents` builtin agents
(admin `spawn`) besides m1nd.

Memory: once every agent of `hibernating` (m1nd included) shows `hibernating`
in admin `ls`, and every harness of `awake` has parked its system recv, it sums
the PSS (`/proc/<pid>/smaps_rollup`) of every process descended from each
daemon, the daemon itself left out (that sum is what the agents cost), and
divides it by the agents + 1. `hibernating` is measured before `awake` starts
(no sibling daemon shares its pages). Target: at most 15 MB per agent.

Wake: each iteration sends one message (admin `send`) to a hibernating agent
of `hibernating` (a different one each time, in turn; the one before has
hibernated again first, so nothing else runs), and one to an idle agent of
`awake` (harness up, system recv parked). The figure runs from just before
the send is written until the harness's `turn_start` bus event, its `ts` read
from the agent's events db (`agents/<n>/state/hyperhive-events.sqlite`, as
bench/turn_start.py does). Target: under 1.5 s, judged by the max. Where a
wake's time goes is read back from the daemon's and the harness's logs.

Run from the repo root:  .venv/bin/python bench/hibernation.py
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from benchlib import DaemonProc, host_load_note, percentile  # noqa: E402 - the script's own dir is on sys.path
from turn_start import Events, passable  # noqa: E402

from hyperhive.client import request
from hyperhive.errors import ConnectFailed
from hyperhive.store.events_db import EVENTS_FILE

TARGET_PSS_MB, TARGET_WAKE_S = 15.0, 1.5  # issue 17, acceptance 2
MANAGER = "m1nd"


class NapDaemon(DaemonProc):
    """`hive serve --hibernate-after-seconds N` (builtin driver), spoken to with hyperhive.client."""

    def __init__(self, state_dir: Path, sandbox: str, after: float, port_base: int, uid_base: int) -> None:
        super().__init__(state_dir)
        self.sandbox, self.after, self.port_base, self.uid_base = sandbox, after, port_base, uid_base
        self.events: dict[str, Events] = {}

    def argv(self) -> list[str]:
        return [sys.executable, "-m", "hyperhive", "--state-dir", str(self.state_dir), "serve",
                "--listen", "127.0.0.1:0", "--sandbox", self.sandbox, "--driver", "builtin",
                "--hibernate-after-seconds", f"{self.after:g}", "--agent-port-base", str(self.port_base),
                "--agent-uid-base", str(self.uid_base)]

    def admin(self, op: str, **fields: Any) -> dict[str, Any]:
        try:
            return request(self.admin_path, op, timeout=120.0, **fields)
        except ConnectFailed as exc:  # not up yet: DaemonProc.start retries on OSError
            raise OSError(str(exc)) from None

    def ls(self) -> dict[str, dict[str, Any]]:  # name: the container's row
        return {c["name"]: c for c in self.admin("ls")["containers"]}

    def ev(self, name: str) -> Events:  # an Events opens its db only when first read
        return self.events.setdefault(name, Events(self.state_dir / "agents" / name / "state" / EVENTS_FILE))


def wait_until(what: str, ok: Any, timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while not ok():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not within {timeout:g} s; see {log}")
        time.sleep(0.05)


def asleep(c: dict[str, Any]) -> bool:
    return c["state"] == "hibernating" and c["transient"] is None


def parked(c: dict[str, Any]) -> bool:
    return c["state"] == "running" and c["transient"] is None and c["parked"]["system"] >= 1


def all_are(d: NapDaemon, names: list[str], pred: Any) -> bool:
    cs = d.ls()
    return all(n in cs and pred(cs[n]) for n in names)


# --- memory ----------------------------------------------------------------------

def descendants(root: int, uids: set[int]) -> tuple[list[int], list[int]]:
    """Every live process below ``root`` (by ppid, from /proc; zombies left out), ``root`` left out;
    and, apart, the live processes of ``uids`` (the agents') that are not below it (none should be)."""
    kids: dict[int, list[int]] = {}
    owned = set()
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat, uid = Path(f"/proc/{entry}/stat").read_text(), os.stat(f"/proc/{entry}").st_uid
        except OSError:  # gone meanwhile
            continue
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if state == "Z":  # holds no memory; this host's init may reap late
            continue
        kids.setdefault(int(ppid), []).append(int(entry))
        if uid in uids:
            owned.add(int(entry))
    out, todo = [], list(kids.get(root, []))
    while todo:
        out.append(pid := todo.pop())
        todo.extend(kids.get(pid, []))
    return sorted(out), sorted(owned - set(out))


def rollup_kb(pid: int, *fields: str) -> int:
    """The sum of ``fields`` of /proc/<pid>/smaps_rollup in kB (0: gone, or a zombie)."""
    try:
        lines = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
    except OSError:
        return 0
    return sum(int(ln.split()[1]) for ln in lines if ln.split(":")[0] in fields)


def kind(pid: int) -> str:
    """What the process is, from its argv: bwrap, log_relay, hive harness, hive mcp, or its name."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return "?"
    known = [k for k, hit in (("bwrap", os.path.basename(argv[0]) == "bwrap"), ("hive harness", "harness" in argv),
                              ("log_relay", any("log_relay" in a for a in argv)), ("hive mcp", "mcp" in argv)) if hit]
    return known[0] if known else os.path.basename(argv[0]) or "?"


def memory(d: NapDaemon, agents: int) -> dict[str, Any]:
    uid_files = [d.state_dir / "agents" / n / "uid" for n in os.listdir(d.state_dir / "agents")]
    pids, strays = descendants(d.pid, {int(f.read_text()) for f in uid_files if f.exists()})
    kb = {p: rollup_kb(p, "Pss") for p in pids}
    kinds: dict[str, list[int]] = {}  # kind: [count, kB]
    for p in pids:
        k = kinds.setdefault(kind(p), [0, 0])
        k[0], k[1] = k[0] + 1, k[1] + kb[p]
    return {"per_agent_mb": sum(kb.values()) / 1024 / (agents + 1), "total_mb": sum(kb.values()) / 1024,
            "procs": len(pids), "kinds": kinds, "strays": strays, "daemon_mb": rollup_kb(d.pid, "Pss") / 1024,
            "daemon_uss_mb": rollup_kb(d.pid, "Private_Clean", "Private_Dirty") / 1024}


# --- wake ------------------------------------------------------------------------

def send_to_turn(d: NapDaemon, name: str, i: int) -> tuple[float, float]:
    """(send, turn_start) wall-clock times: from just before the admin send is written until the
    harness's turn_start event (then awaits the turn's end)."""
    ev = d.ev(name)
    ev.skip_to_now()
    t0 = time.time()
    d.admin("send", to=name, body=f"iteration {i}: wake up")
    _, started = ev.wait("turn_start", time.monotonic() + 60)
    ev.wait("turn_end", time.monotonic() + 60)
    return t0, started


def stamps(log: Path, event: str, **match: str) -> list[float]:
    """Wall-clock times of a log event (JSON lines: event, timestamp in ISO UTC)."""
    out = []
    for line in log.read_text(errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and rec.get("event") == event and all(rec.get(k) == v for k, v in match.items()):
            out.append(datetime.fromisoformat(str(rec["timestamp"])).timestamp())
    return out


def stages(d: NapDaemon, wakes: list[tuple[str, float, float]]) -> dict[str, list[float]]:
    """Where each wake's time went, from the logs: the daemon's `container.start` (harness launched),
    the harness's first line `harness.config` (after its imports, events db, relays and the daemon
    connection) and its `ready` event (the driver open: `hive mcp` started, the MCP session up)."""
    out: dict[str, list[float]] = {"send -> harness launched": [], "launched -> connected": [],
                                   "connected -> ready": [], "ready -> turn_start": []}
    for name, t0, started in wakes:
        hlog = d.state_dir / "agents" / name / "harness.log"
        marks = [t0]
        for ts in (stamps(d.log_path, "container.start", agent=name), stamps(hlog, "harness.config"),
                   stamps(hlog, "harness.event", kind="ready")):
            marks.append(min((t for t in ts if t >= marks[-1]), default=math.nan))
        marks.append(started)
        for key, a, b in zip(out, marks, marks[1:], strict=False):
            if not math.isnan(b - a):
                out[key].append(b - a)
    return out


def stats(xs: list[float]) -> str:
    s = sorted(xs) or [math.nan]
    return f"p50 {percentile(s, 0.5):.3f} p90 {percentile(s, 0.9):.3f} min {s[0]:.3f} max {s[-1]:.3f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--agents", type=int, default=10, help="builtin agents per daemon, m1nd aside (default: 10)")
    ap.add_argument("--iterations", type=int, default=10, help="measured wakes, after 1 warmup (default: 10)")
    ap.add_argument("--hibernate-after", type=float, default=3.0,
                    help="the hibernating daemon's --hibernate-after-seconds (default: 3)")
    ap.add_argument("--sandbox", choices=("auto", "on", "off"), default="auto",
                    help="the daemons' --sandbox (auto: on when root with bubblewrap, as in production)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (state dirs, daemon logs)")
    args = ap.parse_args()
    can = os.geteuid() == 0 and shutil.which("bwrap")
    sandbox = args.sandbox if args.sandbox != "auto" else "on" if can else "off"
    names = [f"a{i:02d}" for i in range(args.agents)]
    everyone = [*names, MANAGER]

    print(host_load_note(skew="high"), flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="hive-bench-nap-"))
    passable(tmp)
    rng = random.Random(str(tmp))  # ports and uids of their own: other hives on this host use the defaults
    base, uids = rng.randrange(20000, 58000), rng.randrange(1_950_000_000, 2_140_000_000, 1 << 16)
    nap = NapDaemon(tmp / "hibernating", sandbox, args.hibernate_after, base, uids)
    awake = NapDaemon(tmp / "awake", sandbox, 0.0, base + 1000, uids + (1 << 16))
    wakes: list[tuple[str, float, float]] = []  # (agent, send, turn_start)
    refs: list[float] = []
    try:
        t0 = time.monotonic()
        nap.start()
        for n in names:
            nap.admin("spawn", name=n)
        spawned = time.monotonic() - t0
        wait_until("every agent hibernating", lambda: all_are(nap, everyone, asleep), 120, nap.log_path)
        mem_nap = memory(nap, args.agents)
        print(f"builtin driver, sandbox {sandbox}, {args.agents} agents + {MANAGER} per daemon; hibernating one: "
              f"spawned {spawned:.1f} s, all hibernating {time.monotonic() - t0:.1f} s after start", flush=True)
        awake.start()
        for n in names:
            awake.admin("spawn", name=n)
        wait_until("every harness parked", lambda: all_are(awake, everyone, parked), 120, awake.log_path)
        mem_awake = memory(awake, args.agents)

        for i in range(1 + args.iterations):
            n = names[i % len(names)]
            wait_until(f"{n} hibernating", lambda n=n: asleep(nap.ls()[n]), 60, nap.log_path)
            t_sent, t_started = send_to_turn(nap, n, i)
            wait_until(f"{n} idle", lambda n=n: awake.ev(n).balance() == 0 and parked(awake.ls()[n]), 60,
                       awake.log_path)
            r_sent, r_started = send_to_turn(awake, n, i)
            if i >= 1:
                wakes.append((n, t_sent, t_started))
                refs.append(r_started - r_sent)
            # the woken one sleeps again before the next: nothing else runs during a measurement
            wait_until(f"{n} hibernating again", lambda n=n: asleep(nap.ls()[n]), 60, nap.log_path)
        restarts = sum(int(c["restarts"]) for c in nap.ls().values())
        where = stages(nap, wakes)
    finally:
        for d in (nap, awake):
            for ev in d.events.values():
                ev.close()
            d.stop()
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    print(f"memory: PSS of every live process below the daemon (itself apart) / {args.agents + 1} agents")
    for label, mem in (("hibernating", mem_nap), ("awake", mem_awake)):
        kinds = ", ".join(f"{k} x{n} {kb / 1024:.1f} MB" for k, (n, kb) in sorted(mem["kinds"].items())) or "none"
        print(f"  idle_agent_pss_mb {label} {mem['per_agent_mb']:.2f}  (sum {mem['total_mb']:.1f} MB over "
              f"{mem['procs']} processes: {kinds}); daemon's own PSS {mem['daemon_mb']:.1f} MB "
              f"(USS {mem['daemon_uss_mb']:.1f} MB); agents' processes outside its tree: {mem['strays'] or 'none'}")
    print(f"  target <= {TARGET_PSS_MB:g} MB: {'met' if mem_nap['per_agent_mb'] <= TARGET_PSS_MB else 'not met'}")
    print(f"wake: send -> turn_start, s, {len(wakes)} iterations after 1 warmup, one agent at a time")
    woke = [b - a for _, a, b in wakes]
    print(f"  hibernating agent  {stats(woke)}")
    print(f"  awake agent (ref)  {stats(refs)}")
    print(f"  where a wake's time goes (daemon and harness logs); restarts (crashes) counted: {restarts}")
    for key, xs in where.items():
        print(f"    {key:26s} {stats(xs)}")
    if woke:
        s = sorted(woke)
        print(f"wake_to_turn_p50_s {percentile(s, 0.5):.3f}")
        print(f"wake_to_turn_max_s {s[-1]:.3f}")
        print(f"target < {TARGET_WAKE_S:g} s: {'met' if s[-1] < TARGET_WAKE_S else 'not met'} (judged by the max)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
