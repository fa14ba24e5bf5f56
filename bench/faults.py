#!/usr/bin/env python
"""The fault suite's fuzzing and churn (tests/faults/, issue 16) with larger counts.

Runs the same three as the tests, each on a daemon of its own (a temp state
dir, `fz` running with the builtin driver, `sink` stopped), and prints the
same `faults: …` figures: wire fuzzing (fuzzed lines on fz's socket, each
followed by a ping), HTTP fuzzing (fuzzed requests on the dashboard and on
fz's web UI through the daemon's relay), connection churn (connections opened
and dropped on fz's socket, the admin socket and the dashboard, then the
daemon's fd count against its baseline). Exits 1 if any finds a problem (an
`internal` reply, a 5xx, a hang, a crash, a traceback in a log, an fd leak).

Run from the repo root:  .venv/bin/python bench/faults.py [--wire-lines N] [--http-requests N] [--churn N]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import urllib.parse
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "tests"), str(REPO / "tests" / "faults")]

from benchlib import host_load_note  # noqa: E402 - the script's own dir is on sys.path
from faults_churn import Endpoints, churn, still_serving  # noqa: E402
from faults_common import FIGURES, FUZZED, Fleet, crash_note, log_problems, report  # noqa: E402
from faults_http import http_fuzz  # noqa: E402
from faults_http_gen import Target  # noqa: E402
from faults_wire import wire_fuzz  # noqa: E402


def run_wire(fleet: Fleet, lines: int, seed: int) -> list[str]:
    fig = wire_fuzz(fleet.hive.socket(FUZZED), lines, seed, timeout=max(120.0, lines / 1000))
    crashes = fleet.crashes()
    logged = log_problems(fleet.hive.log_path)
    report(f"{fig.summary()}; {crash_note(crashes)}, {len(logged)} tracebacks logged")
    return fig.problems() + crashes + logged


def run_http(fleet: Fleet, requests: int, seed: int, workers: int) -> list[str]:
    h = fleet.hive
    session = h.session()
    targets = [Target(kind, port, h.token, session.cookie, session.xsrf) for kind, port in (
        ("dashboard", urllib.parse.urlsplit(h.url).port), ("agent", urllib.parse.urlsplit(h.agent_url(FUZZED)).port))
        if port]
    figs = http_fuzz(targets, 2 * requests, seed, workers=workers)
    crashes = fleet.crashes()
    logged = log_problems(h.log_path, h.paths.agents / FUZZED / "harness.log")
    for fig in figs:
        report(f"{fig.summary()}; {crash_note(crashes)}")
    report(f"http fuzz: {len(logged)} tracebacks logged")
    return [p for f in figs for p in f.problems()] + crashes + logged


def run_churn(fleet: Fleet, connections: int, seed: int, tolerance: int) -> list[str]:
    h = fleet.hive
    port = urllib.parse.urlsplit(h.url).port
    assert port is not None
    ep = Endpoints(h.socket(FUZZED), h.paths.admin_socket, port, f"127.0.0.1:{port}")
    fig = churn(ep, fleet.daemon_pid, connections, seed, tolerance=tolerance)
    crashes = fleet.crashes()
    report(f"{fig.summary()}; {crash_note(crashes)}")
    out = [f"fd count {fig.fd_after}, baseline {fig.fd_baseline}"] if fig.fd_after > fig.fd_baseline + tolerance else []
    try:
        still_serving(ep)
    except (AssertionError, OSError) as exc:
        out.append(f"a socket stopped serving after the churn: {exc!r}")
    return out + [f"connect errors: {dict(fig.errors)}"] * bool(fig.errors) + crashes + log_problems(h.log_path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--wire-lines", type=int, default=1_000_000, help="fuzzed lines on the agent's socket")
    ap.add_argument("--http-requests", type=int, default=100_000, help="fuzzed requests on each HTTP surface")
    ap.add_argument("--churn", type=int, default=100_000,
                    help="connections opened and dropped on the agent's socket (and a tenth as many on each other)")
    ap.add_argument("--workers", type=int, default=8, help="HTTP requests at once")
    ap.add_argument("--tolerance", type=int, default=2, help="fds over the baseline still taken as back")
    ap.add_argument("--seed", type=int, default=16)
    ap.add_argument("--only", choices=("wire", "http", "churn"), action="append", help="run only these (repeatable)")
    ap.add_argument("--keep", action="store_true", help="keep the state dirs (and the daemon logs)")
    args = ap.parse_args()
    print(host_load_note(), flush=True)
    runs: dict[str, Callable[[Fleet], list[str]]] = {
        "wire": lambda f: run_wire(f, args.wire_lines, args.seed),
        "http": lambda f: run_http(f, args.http_requests, args.seed, args.workers),
        "churn": lambda f: run_churn(f, args.churn, args.seed, args.tolerance),
    }
    problems: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="hf-"))
    try:
        for name, run in runs.items():
            if args.only and name not in args.only:
                continue
            fleet = Fleet.start(root / name)
            try:
                problems += [f"{name}: {p}" for p in run(fleet)]
            finally:
                fleet.stop()
            print(FIGURES[-1] if name != "http" else "\n".join(FIGURES[-3:]), flush=True)
    finally:
        if args.keep:
            print(f"state dirs kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    for p in problems[:50]:
        print(f"problem: {p}")
    print(f"faults: {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
