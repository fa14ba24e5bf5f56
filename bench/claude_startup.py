#!/usr/bin/env python
"""A claude turn's start-up beside the bare CLI's (issue 17, acceptance 1).

Starts the scripted Anthropic server (tests/fake_anthropic.py: every request
answered with a short text; it notes when each ``POST /v1/messages`` arrives)
and `hive serve --driver claude` on a temp state dir (sandboxed when this host
can: root and bubblewrap; `--sandbox`), and spawns one claude agent. When that
agent runs sandboxed, a second daemon with `--sandbox off` and an agent of its
own runs beside it (`--unsandboxed`), so what the sandbox adds is visible.

Kinds of iteration, alternated (the order flips every round):
- agent: when the agent is idle (its last turn ended, its harness has parked
  its system recv again), from just before the admin `send` is written until
  the fake receives the turn's first /v1/messages request (through the
  harness's relay and the daemon's gateway; it must offer the hyperhive
  tools: `hive mcp` had answered), then waits for the turn's end;
- bare: the same `claude` binary run here as a plain subprocess (no sandbox,
  no MCP config; the harness's environment switches, the fake's URL and key,
  a HOME of its own, the prompt on stdin), from just before the exec until
  the fake receives its first /v1/messages request; then it runs to its exit.
  Its cwd is an empty git repo on the agent's branch, as a fresh agent's
  workspace is (the CLI reads a repo's state before its first request: ~25 ms
  here, which is the CLI's, not hyperhive's);
- bare_plain: the same in an empty dir with no git, printed for reference.
Both times are this process's monotonic clock (the fake runs on a thread here).

It prints p50/p90 of each, the ratio of the agent's p50 over the bare p50 as
`claude_turn_startup_ratio`, and whether it meets the target (<= 1.25).

Run from the repo root:  .venv/bin/python bench/claude_startup.py
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchlib import REPO, host_load_note, percentile  # noqa: E402 - the script's own dir is on sys.path
from turn_start import ClaudeDaemon, Events, passable, wait_idle  # noqa: E402

from hyperhive.harness.claude_cmdline import claude_env

sys.path.insert(0, str(REPO / "tests"))
from fake_anthropic import FakeAnthropic, Reply, text  # noqa: E402

TARGET = 1.25
NAME = "agent"


class TimedFake(FakeAnthropic):
    """The scripted server, noting the arrival (monotonic) of every POST /v1/messages."""

    def __init__(self) -> None:
        super().__init__(lambda body: Reply([text("ok")]))
        self.arrivals: list[tuple[float, int]] = []  # (arrival, how many hyperhive tools it offered)
        self._arrived = threading.Condition()

    def _record(self, method: str, path: str, body: Any, headers: dict[str, str] | None = None) -> None:
        if method == "POST" and path.split("?", 1)[0].endswith("/v1/messages"):
            tools = body.get("tools") if isinstance(body, dict) else None
            ours = sum(1 for t in tools or ()
                       if isinstance(t, dict) and str(t.get("name")).startswith("mcp__hyperhive__"))
            with self._arrived:
                self.arrivals.append((time.monotonic(), ours))
                self._arrived.notify_all()
        super()._record(method, path, body, headers)

    def count(self) -> int:
        with self._arrived:
            return len(self.arrivals)

    def arrival(self, n: int, timeout: float = 60.0) -> tuple[float, int]:
        """When request number ``n`` (0-based) arrived and its hyperhive tools; waits for it."""
        with self._arrived:
            if not self._arrived.wait_for(lambda: len(self.arrivals) > n, timeout):
                raise RuntimeError(f"no model request in {timeout}s")
            return self.arrivals[n]


class Agent:
    """One daemon (`--sandbox MODE`) with one claude agent, measured send → first request."""

    def __init__(self, where: Path, sandbox: str) -> None:
        self.sandbox = sandbox
        self.d = ClaudeDaemon(where / "state", sandbox)
        self.ev = Events(self.d.state_dir / "agents" / NAME / "state" / "hyperhive-events.sqlite")
        self.turn_starts: list[float] = []  # send → the harness's turn_start, ms (where the time goes)
        self.tools = 0  # the most hyperhive tools in a turn's first request (the MCP server had answered)
        self.toolless: list[int] = []  # iterations whose first request offered none

    def start(self) -> None:
        self.d.start()
        self.d.admin("spawn", name=NAME)

    def one(self, fake: TimedFake, i: int) -> float:
        wait_idle(self.d, NAME, self.ev, timeout=90)
        self.ev.skip_to_now()
        n = fake.count()
        wall0, t0 = time.time(), time.monotonic()
        self.d.admin("send", to=NAME, body=f"iteration {i}: say ok")
        first, tools = fake.arrival(n)
        self.tools = max(self.tools, tools)
        if tools == 0:  # the CLI asked before `hive mcp` had answered: its start-up is not in this figure
            self.toolless.append(i)
        _, started = self.ev.wait("turn_start", time.monotonic() + 30)
        self.turn_starts.append((started - wall0) * 1000.0)
        wait_idle(self.d, NAME, self.ev)  # the turn has ended before anything else is measured
        return (first - t0) * 1000.0

    def stop(self) -> None:
        self.ev.close()
        self.d.stop()


def bare(fake: TimedFake, binary: str, home: Path, i: int, cwd: Path | None = None) -> float:
    """ms from just before the bare CLI's exec (in ``cwd``, default ``home``) until its
    first model request (then it runs to its end)."""
    env = claude_env({"PATH": os.environ.get("PATH", ""), **fake.env()}, home)
    argv = [binary, "-p", "--output-format", "stream-json", "--verbose"]
    n = fake.count()
    t0 = time.monotonic()
    p = subprocess.Popen(argv, cwd=cwd or home, env=env, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE)
    try:
        _, err = p.communicate(f"iteration {i}: say ok".encode(), timeout=60)
    except subprocess.TimeoutExpired:
        os.kill(p.pid, 9)
        p.wait()
        raise
    if p.returncode != 0:
        raise RuntimeError(f"bare claude exited {p.returncode}: {err.decode(errors='replace')[-500:]}")
    return (fake.arrival(n, timeout=1)[0] - t0) * 1000.0


def stats_line(label: str, xs: list[float]) -> str:
    s = sorted(xs)
    return (f"{label:42s} p50 {percentile(s, 0.5):8.1f} p90 {percentile(s, 0.9):8.1f} "
            f"min {s[0]:8.1f} max {s[-1]:8.1f}")


def p50(xs: list[float]) -> float:
    return percentile(sorted(xs), 0.5)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iterations", type=int, default=15, help="measured runs of each kind (default: 15)")
    ap.add_argument("--warmup", type=int, default=2, help="runs of each kind before measuring (default: 2)")
    ap.add_argument("--sandbox", choices=("auto", "on", "off"), default="auto",
                    help="the agent's daemon's --sandbox (auto: on when root with bubblewrap, as in production)")
    ap.add_argument("--unsandboxed", choices=("auto", "on", "off"), default="auto",
                    help="also an agent on a `--sandbox off` daemon (auto: when the main one is sandboxed)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (state, daemon logs)")
    args = ap.parse_args()
    binary = shutil.which("claude")
    if binary is None:
        print("needs the Claude Code CLI (`claude` on PATH)")
        return 2
    can_sandbox = os.geteuid() == 0 and shutil.which("bwrap") is not None
    sandbox = ("on" if can_sandbox else "off") if args.sandbox == "auto" else args.sandbox
    also_off = args.unsandboxed == "on" or (args.unsandboxed == "auto" and sandbox == "on")
    version = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout.strip()

    print(host_load_note(skew="high"), flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="hive-bench-startup-"))
    passable(tmp)
    home = tmp / "bare-home"
    home.mkdir()
    work = tmp / "bare-work"  # as a fresh agent's workspace: an empty repo on its branch
    work.mkdir()
    subprocess.run(["git", "init", "-q", "--template=", f"--initial-branch=hive/{NAME}", str(work)], check=True)
    fake = TimedFake().start()
    os.environ.update(fake.env())  # the daemons' gateways forward there; agents never see the key
    agents = {"agent": Agent(tmp / "main", sandbox)}
    if also_off and sandbox == "on":
        agents["agent_unsandboxed"] = Agent(tmp / "unsandboxed", "off")
    samples: dict[str, list[float]] = {"bare": [], "bare_plain": [], **{k: [] for k in agents}}
    try:
        for a in agents.values():
            a.start()
        for a in agents.values():
            wait_idle(a.d, NAME, a.ev, timeout=120)  # the spawn's kick turn has run
        why = "root + bubblewrap" if can_sandbox else "not root, or no bubblewrap"
        print(f"claude {version}; agent's daemon --sandbox {sandbox} (this host can sandbox: "
              f"{'yes' if can_sandbox else 'no'}, {why})"
              + ("; an unsandboxed agent (--sandbox off) beside it" if len(agents) > 1 else ""), flush=True)
        kinds = list(samples)
        for i in range(args.warmup + args.iterations):
            for k in kinds if i % 2 == 0 else kinds[::-1]:
                if k == "bare":
                    ms = bare(fake, binary, home, i, work)
                elif k == "bare_plain":
                    ms = bare(fake, binary, home, i)
                else:
                    ms = agents[k].one(fake, i)
                if i >= args.warmup:
                    samples[k].append(ms)
    finally:
        for a in agents.values():
            a.stop()
        fake.stop()
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    print(f"iterations {args.iterations} per kind (after {args.warmup} warmup each), alternating")
    print(stats_line("bare exec_to_first_request_ms", samples["bare"]) + "  (cwd: a repo as a fresh workspace)")
    print(stats_line("bare_plain exec_to_first_request_ms", samples["bare_plain"]) + "  (cwd: an empty dir, no git)")
    for k, a in agents.items():
        print(stats_line(f"{k} send_to_first_request_ms", samples[k])
              + f"  (sandbox {a.sandbox}; {a.tools} hyperhive tools in it)")
        if a.toolless:
            print(f"  WARNING: iterations {a.toolless} (warmups count from 0): the first request came "
                  "before the hyperhive tools were there (the CLI did not wait for `hive mcp`)")
        print(stats_line("  of which send_to_turn_start_ms", a.turn_starts[args.warmup:]))
    base = p50(samples["bare"])
    if "agent_unsandboxed" in agents:
        added = p50(samples["agent"]) - p50(samples["agent_unsandboxed"])
        print(f"the sandbox adds p50 {added:+.1f} ms; unsandboxed ratio "
              f"{p50(samples['agent_unsandboxed']) / base:.3f} (for reference)")
    ratio = p50(samples["agent"]) / base
    print(f"ratio of p50s (agent / bare): {p50(samples['agent']):.1f} / {base:.1f} ms")
    plain = p50(samples["agent"]) / p50(samples["bare_plain"])
    print(f"for reference, over the bare CLI in a dir with no git: {plain:.3f}")
    print(f"claude_turn_startup_ratio {ratio:.3f}  (sandbox {sandbox})  "
          f"target <= {TARGET}: {'met' if ratio <= TARGET else 'not met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
