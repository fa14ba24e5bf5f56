#!/usr/bin/env python
"""The dashboard with 1000 agents registered: `GET /api/state` latency and
push latency (issue 6, item 9; targets < 100 ms and < 50 ms).

Setup: the agents are laid out on disk by the daemon's own code
(`StatePaths.create_agent`, `config_repo.init_repo`, `materialize`, a
`containers` row with desired=stopped), exactly what `spawn` + `stop` leave
behind, minus running 1000 harness processes once each. Then `hive serve`
starts and boots them all: 1000 ContainerActors, 1000 agent sockets, all
stopped; only m1nd runs.

Measured:
- `GET /api/state`: sequential requests; the full JSON of all six sections.
- push: a websocket client on `/ws`. Each patch carries `at`, the time the
  hub event was published in the daemon (same host, same clock);
  push latency = patch received − at. Also end to end: from just before the
  triggering request is written to the admin / m1nd socket until the patch
  is read. Triggers: an operator send (message flow), an operator question
  (questions section, one actor call), a container stop/start (single rows).
- with `--browser` (Playwright + /usr/bin/chromium): the same in the real
  page, received = after the page applied the patch to the DOM.

Run from the repo root:  .venv/bin/python bench/dashboard.py
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures as cf
import json
import shutil
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(REPO))

from benchlib import DaemonProc, LineConn, host_load_note, percentile  # noqa: E402

TARGET_STATE_MS = 100.0
TARGET_PUSH_MS = 50.0


def lay_out(state: Path, n: int) -> list[str]:
    """Create ``n`` stopped agents with the daemon's own functions."""
    from hyperhive import config_repo
    from hyperhive.names import AgentName
    from hyperhive.paths import AgentConfig, StatePaths
    from hyperhive.store.models import Container, open_hive_db

    paths = StatePaths(state)
    paths.root.mkdir(parents=True, exist_ok=True)
    names = [f"agent-{i:04d}" for i in range(n)]

    def one(name: str) -> None:
        agent = AgentName(name)
        paths.create_agent(agent, AgentConfig())
        head = config_repo.init_repo(paths.config_dir(agent), agent)
        config_repo.materialize(paths.config_dir(agent), head, paths.applied(agent))

    with cf.ThreadPoolExecutor(8) as pool:  # git runs as subprocesses: overlap them
        list(pool.map(one, names))
    db = open_hive_db(paths.db)
    now = time.time()
    with db.atomic():
        for i, name in enumerate(names):
            Container.insert(name=name, desired="stopped", created_at=now + i * 1e-6).execute()
    db.close()
    return names


def dashboard_url(d: DaemonProc, timeout: float = 120.0) -> str:
    f = d.state_dir / "run" / "dashboard.port"
    end = time.monotonic() + timeout
    while not f.exists() or not f.read_text().strip():
        if time.monotonic() > end:
            raise RuntimeError("no run/dashboard.port")
        time.sleep(0.05)
    return f"http://127.0.0.1:{int(f.read_text())}"


def operator_token(d: DaemonProc) -> str:
    """The daemon's own operator token (issue 12: every surface wants it)."""
    return (d.state_dir / "run" / "operator.token").read_text().strip()


def bearer(d: DaemonProc) -> dict[str, str]:
    return {"Authorization": f"Bearer {operator_token(d)}"}


def wait_ready(d: DaemonProc, timeout: float = 300.0) -> None:
    """Until the daemon logged daemon.ready: every container is registered."""
    end = time.monotonic() + timeout
    while b'"daemon.ready"' not in d.log_path.read_bytes():
        if time.monotonic() > end:
            raise RuntimeError(f"daemon not ready after {timeout}s; see {d.log_path}")
        time.sleep(0.1)


def stats(ms: list[float]) -> str:
    s = sorted(ms)
    return (f"n={len(s)} p50={percentile(s, .5):.1f} p95={percentile(s, .95):.1f} "
            f"max={s[-1]:.1f} ms")


def bench_state(url: str, n: int, headers: dict[str, str]) -> list[float]:
    out = []
    size = 0
    for _ in range(n):
        t0 = time.perf_counter()
        body = urllib.request.urlopen(urllib.request.Request(url + "/api/state", headers=headers), timeout=30).read()
        out.append((time.perf_counter() - t0) * 1000)
        size = len(body)
    state = json.loads(body)["state"]
    print(f"api_state bytes={size} containers={len(state['containers'])}")
    return out


async def bench_push(url: str, d: DaemonProc, iterations: int) -> dict[str, list[tuple[float, float]]]:
    from tornado.httpclient import HTTPRequest
    from tornado.websocket import websocket_connect

    ws = await websocket_connect(HTTPRequest(url.replace("http", "ws") + "/ws", headers=bearer(d)))
    first = json.loads(await ws.read_message())
    assert first["type"] == "snapshot", first["type"]
    admin = LineConn(d.admin_path)
    m1nd = LineConn(d.agent_socket("m1nd"))
    results: dict[str, list[tuple[float, float]]] = {"message": [], "question": [], "container": []}

    async def until(pred: Any) -> tuple[float, dict[str, Any]]:
        while True:
            msg = json.loads(await asyncio.wait_for(ws.read_message(), 10))
            got = time.time()
            if msg.get("type") == "patch" and pred(msg):
                return got, msg

    for i in range(iterations):
        t0 = time.time()
        admin.call("send", to="agent-0007", body=f"bench {i}")
        got, msg = await until(lambda m, body=f"bench {i}": any(
            r["body"] == body for r in m["sections"].get("flow", [])[:3]))
        results["message"].append(((got - msg["at"]) * 1000, (got - t0) * 1000))
        t0 = time.time()
        qid = m1nd.call("ask_operator", question=f"bench question {i}?", options=[])["question_id"]
        got, msg = await until(lambda m, qid=qid: any(
            q["id"] == qid for q in m["sections"].get("questions", {}).get("pending", [])))
        results["question"].append(((got - msg["at"]) * 1000, (got - t0) * 1000))
        admin.call("cancel_question", question_id=qid)
    for _ in range(min(10, iterations)):
        for verb, state in (("start", "running"), ("stop", "stopped")):
            t0 = time.time()
            admin.write(verb, name="agent-0001")  # the reply comes after the verb; the pushes before
            got, msg = await until(lambda m, s=state: any(r["name"] == "agent-0001" and r["state"] == s
                                                         and not r["transient"] for r in m.get("rows", [])))
            admin.read()
            results["container"].append(((got - msg["at"]) * 1000, (got - t0) * 1000))
    ws.close()
    admin.close()
    m1nd.close()
    return results


def bench_browser(url: str, d: DaemonProc, iterations: int) -> list[float] | None:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        print("browser: playwright is not installed; skipped")
        return None
    if not Path("/usr/bin/chromium").exists():
        print("browser: /usr/bin/chromium is missing; skipped")
        return None
    args = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run", "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"]
    admin = LineConn(d.admin_path)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=args)
        page = browser.new_page()
        t0 = time.perf_counter()
        page.goto(f"{url}/login?token={operator_token(d)}")  # → the page, logged in
        page.wait_for_selector('#containers .row[data-key="agent-0999"]', timeout=60_000)
        print(f"browser first render of 1000 rows: {(time.perf_counter() - t0) * 1000:.0f} ms")
        for i in range(iterations):
            before = page.evaluate("window.hive.pushes.length")
            admin.call("send", to="agent-0007", body=f"browser {i}")
            page.wait_for_function(f"window.hive.pushes.length > {before}", timeout=10_000)
            time.sleep(0.02)
        pushes = page.evaluate("window.hive.pushes")
        browser.close()
    admin.close()
    return [(x["received"] - x["at"]) * 1000 for x in pushes[-iterations:]]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--agents", type=int, default=1000)
    ap.add_argument("--requests", type=int, default=50)
    ap.add_argument("--iterations", type=int, default=30)
    ap.add_argument("--browser", action="store_true", help="also measure in the real page (Playwright)")
    ap.add_argument("--keep", action="store_true", help="keep the temp state dir")
    ns = ap.parse_args()
    print(host_load_note())
    tmp = Path(tempfile.mkdtemp(prefix="hive-dash-bench-"))
    d = DaemonProc(tmp / "state")
    try:
        t0 = time.perf_counter()
        lay_out(d.state_dir, ns.agents)
        print(f"laid out {ns.agents} agents in {time.perf_counter() - t0:.1f} s")
        t0 = time.perf_counter()
        d.start(timeout=120)
        url = dashboard_url(d)
        wait_ready(d)
        print(f"daemon up (boot of {ns.agents + 1} containers) in {time.perf_counter() - t0:.1f} s")
        bench_state(url, 3, bearer(d))  # warm up
        state_ms = bench_state(url, ns.requests, bearer(d))
        print("api_state_ms", stats(state_ms))
        push = asyncio.run(bench_push(url, d, ns.iterations))
        for kind, pairs in push.items():
            print(f"push_ms {kind:9s} event→client {stats([p[0] for p in pairs])};  "
                  f"request→client {stats([p[1] for p in pairs])}")
        browser = bench_browser(url, d, ns.iterations) if ns.browser else None
        if browser:
            print("push_ms browser   event→page applied", stats(browser))
        p50_state = percentile(sorted(state_ms), .5)
        p95_push = max(percentile(sorted(p[0] for p in pairs), .95) for pairs in push.values())
        print(f"api_state_p50_ms {p50_state:.1f} (target < {TARGET_STATE_MS:g}: "
              f"{'met' if p50_state < TARGET_STATE_MS else 'NOT met'})")
        print(f"push_p95_ms {p95_push:.1f} (target < {TARGET_PUSH_MS:g}: "
              f"{'met' if p95_push < TARGET_PUSH_MS else 'NOT met'})")
    finally:
        d.stop()
        if ns.keep:
            print(f"state dir kept: {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
