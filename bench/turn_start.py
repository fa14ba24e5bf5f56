#!/usr/bin/env python
"""Message → turn start for a claude agent, with a project clone and without
(issue 14, acceptance 6).

Starts the scripted Anthropic server (tests/fake_anthropic.py: every request
answered with a short text) and `hive serve --driver claude` on a temp state
dir (sandboxed when this host can: root and bubblewrap; `--sandbox`), makes an
operator repository of `--files` files, and spawns two claude agents: `plain`
(an empty workspace) and `cloned` (`spawn --repo`, a clone of that repo on
hive/cloned; the clone is made at spawn and is not in the figure). The real
`claude` CLI runs each turn.

Each iteration sends one message to each agent, in alternating order, each
only when that agent is idle (its last turn ended and its harness has parked
its recv again; a pull after the last turn may still run, as it would in
use). The figure runs from just before the admin `send` is written until the
harness's `turn_start` bus event, read back (its `ts`) from the agent's
events db, `agents/<n>/state/hyperhive-events.sqlite`; polling the db adds
nothing to it. Both clocks are this host's wall clock.

It prints p50/p90 of each and the difference (cloned − plain), then a
verdict by this rule: the difference of the p50s is *within noise* when it is
under 2 ms, or when it is at most the 95th percentile of the same difference
over 2000 random relabelings of the pooled samples (a permutation test at
5%: a difference that large arises often by chance alone).

Run from the repo root:  .venv/bin/python bench/turn_start.py
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import REPO, DaemonProc, host_load_note, percentile  # noqa: E402 - the script's own dir is on sys.path

sys.path.insert(0, str(REPO / "tests"))
from fake_anthropic import FakeAnthropic, Reply, text  # noqa: E402

NAMES = ("plain", "cloned")
NOISE_FLOOR_MS = 2.0
SHUFFLES = 2000


class ClaudeDaemon(DaemonProc):
    """`hive serve` with the claude driver, pointed at the fake API by the environment it inherits."""

    def __init__(self, state_dir: Path, sandbox: str) -> None:
        super().__init__(state_dir)
        self.sandbox = sandbox
        self.port_base = random.Random(str(state_dir)).randrange(20000, 60000)  # agents' sticky web ports

    def argv(self) -> list[str]:
        return [sys.executable, "-m", "hyperhive", "--state-dir", str(self.state_dir), "serve",
                "--listen", "127.0.0.1:0", "--sandbox", self.sandbox, "--driver", "claude",
                "--agent-port-base", str(self.port_base)]


def passable(path: Path) -> None:
    """o+x (never read) on every dir down to ``path``: a root daemon runs each agent as its own uid."""
    for d in [*reversed(path.resolve().parents), path.resolve()]:
        mode = d.stat().st_mode
        if not mode & 0o001:
            os.chmod(d, mode | 0o001)


def operator_repo(where: Path, files: int) -> Path:
    """A git repo of ``files`` small files in a few dirs, one commit on main."""
    repo = where / "project"
    subprocess.run(["git", "-c", "init.defaultBranch=main", "init", "-q", str(repo)], check=True)
    for i in range(files):
        f = repo / f"pkg{i % 12:02d}" / f"module_{i:04d}.py"
        f.parent.mkdir(exist_ok=True)
        f.write_text(f'"""module {i}"""\n\n' + "".join(f"def f{j}(x):\n    return x + {j}\n\n" for j in range(8)))
    ident = ["-c", "user.name=bench", "-c", "user.email=bench@hive.invalid"]
    subprocess.run(["git", "-C", str(repo), "add", "-A"], check=True)
    subprocess.run(["git", "-C", str(repo), *ident, "commit", "-q", "-m", "the project"], check=True)
    return repo


class Events:
    """One agent's events db, read-only: the ids and times of its turn events."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.db: sqlite3.Connection | None = None
        self.last = 0  # the newest event id seen

    def _conn(self) -> sqlite3.Connection:
        if self.db is None:
            self.db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=5)
        return self.db

    def turns(self) -> list[tuple[int, float, str]]:
        """(id, ts, kind) of the turn_start/turn_end events newer than the last seen."""
        try:
            rows = self._conn().execute(
                "SELECT id, ts, kind FROM events WHERE id > ? AND kind IN ('turn_start', 'turn_end') ORDER BY id",
                (self.last,)).fetchall() if self.path.exists() else []
        except sqlite3.OperationalError:  # the harness has not made its table yet
            return []
        return [(int(i), float(ts), str(k)) for i, ts, k in rows]

    def balance(self) -> int:
        """turn_start − turn_end over the whole db: 0 when no turn is open (-1: no db yet)."""
        try:
            (opened, closed), = self._conn().execute(
                "SELECT COALESCE(SUM(kind = 'turn_start'), 0), COALESCE(SUM(kind = 'turn_end'), 0) FROM events "
                "WHERE kind IN ('turn_start', 'turn_end')").fetchall() if self.path.exists() else [(0, 1)]
        except sqlite3.OperationalError:  # the harness has not made its table yet
            return -1
        return int(opened) - int(closed)

    def skip_to_now(self) -> None:
        (newest,) = self._conn().execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()
        self.last = int(newest)

    def wait(self, kind: str, deadline: float) -> tuple[int, float]:
        """The next ``kind`` event after the last seen: (id, ts)."""
        while True:
            for i, ts, k in self.turns():
                self.last = i
                if k == kind:
                    return i, ts
            if time.monotonic() > deadline:
                raise RuntimeError(f"no {kind} in {self.path} in time")
            time.sleep(0.005)

    def close(self) -> None:
        if self.db is not None:
            self.db.close()


def wait_idle(d: ClaudeDaemon, name: str, ev: Events, timeout: float = 60.0) -> None:
    """No turn open and the harness's system recv parked again (asked of the daemon's `ls` only
    once the events db says the turn ended: `ls` is not free, and it shares the daemon with us)."""
    deadline = time.monotonic() + timeout
    while ev.balance() != 0 or d.container(name)["parked"]["system"] < 1:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} did not become idle; see {d.log_path}")
        time.sleep(0.02)


def one(d: ClaudeDaemon, name: str, ev: Events, i: int) -> float:
    """ms from just before the send until the harness's turn_start (then waits for the turn's end)."""
    wait_idle(d, name, ev)
    ev.skip_to_now()
    t0 = time.time()
    d.admin("send", to=name, body=f"iteration {i}: say ok")
    _, started = ev.wait("turn_start", time.monotonic() + 30)
    ev.wait("turn_end", time.monotonic() + 60)
    return (started - t0) * 1000.0


def within_noise(a: list[float], b: list[float], rng: random.Random) -> tuple[bool, float, float]:
    """(verdict, |Δp50|, the permutation bound) by the module's rule."""
    def p50(xs: list[float]) -> float:
        return percentile(sorted(xs), 0.5)

    observed = abs(p50(b) - p50(a))
    pooled = a + b
    diffs = []
    for _ in range(SHUFFLES):
        rng.shuffle(pooled)
        diffs.append(abs(p50(pooled[len(a):]) - p50(pooled[:len(a)])))
    bound = percentile(sorted(diffs), 0.95)
    return observed < NOISE_FLOOR_MS or observed <= bound, observed, bound


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iterations", type=int, default=20, help="measured turns per agent (default: 20)")
    ap.add_argument("--warmup", type=int, default=2, help="turns per agent before measuring (default: 2)")
    ap.add_argument("--files", type=int, default=300, help="files in the operator's repo (default: 300)")
    ap.add_argument("--sandbox", choices=("auto", "on", "off"), default="auto",
                    help="the daemon's --sandbox (auto: on when root with bubblewrap, as in production)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (state, daemon log)")
    args = ap.parse_args()
    if shutil.which("claude") is None:
        print("needs the Claude Code CLI (`claude` on PATH)")
        return 2
    sandbox = args.sandbox
    if sandbox == "auto":
        sandbox = "on" if os.geteuid() == 0 and shutil.which("bwrap") else "off"

    print(host_load_note(skew="high"), flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="hive-bench-turn-"))
    passable(tmp)
    fake = FakeAnthropic(lambda body: Reply([text("ok")])).start()
    os.environ.update(fake.env())  # the daemon's gateway forwards there; agents never see the key
    d = ClaudeDaemon(tmp / "state", sandbox)
    events = {n: Events(d.state_dir / "agents" / n / "state" / "hyperhive-events.sqlite") for n in NAMES}
    samples: dict[str, list[float]] = {n: [] for n in NAMES}
    try:
        repo = operator_repo(tmp, args.files)
        passable(repo)
        d.start()
        t0 = time.monotonic()
        d.admin("spawn", name="plain")
        spawn_plain = time.monotonic() - t0
        t0 = time.monotonic()
        d.admin("spawn", name="cloned", repo=str(repo))
        spawn_cloned = time.monotonic() - t0
        for n in NAMES:
            wait_idle(d, n, events[n], timeout=90)
        print(f"claude agents, sandbox {sandbox}; operator repo of {args.files} files; spawn (not measured): "
              f"plain {spawn_plain:.2f} s, cloned {spawn_cloned:.2f} s (the clone included)", flush=True)
        for i in range(args.warmup + args.iterations):
            order = NAMES if i % 2 == 0 else NAMES[::-1]
            for n in order:
                ms = one(d, n, events[n], i)
                if i >= args.warmup:
                    samples[n].append(ms)
        pulled = d.admin("pull", name="cloned")
    finally:
        for ev in events.values():
            ev.close()
        d.stop()
        fake.stop()
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    print(f"iterations {args.iterations} per agent (after {args.warmup} warmup), interleaved; "
          f"cloned's branch {pulled['branch']} at {str(pulled['commit'])[:12]}")
    stats = {}
    for n in NAMES:
        s = sorted(samples[n])
        stats[n] = (percentile(s, 0.5), percentile(s, 0.9))
        print(f"{n:7s} message_to_turn_start_ms p50 {stats[n][0]:8.2f} p90 {stats[n][1]:8.2f} "
              f"min {s[0]:8.2f} max {s[-1]:8.2f}")
    dp50 = stats["cloned"][0] - stats["plain"][0]
    dp90 = stats["cloned"][1] - stats["plain"][1]
    print(f"diff (cloned - plain)          p50 {dp50:+8.2f} p90 {dp90:+8.2f}")
    ok, observed, bound = within_noise(samples["plain"], samples["cloned"], random.Random(14))
    print(f"noise rule: |dp50| {observed:.2f} ms vs floor {NOISE_FLOOR_MS:.1f} ms and permutation bound "
          f"{bound:.2f} ms (95th pct of |dp50| over {SHUFFLES} relabelings)")
    print(f"turn_start_repo_vs_plain_p50_diff_ms {dp50:+.2f}  "
          f"{'within noise' if ok else 'NOT within noise'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
