"""HTTP fuzzing (issue 16): 10,000 fuzzed requests on the dashboard and 10,000
on an agent's web UI through the daemon's relay (its sticky port). No answer
is a 5xx, none hangs, the daemon and the agent's harness stay up, and neither
log holds a traceback or a handler's unexpected exception."""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator

import pytest
from faults_common import FUZZED, Fleet, crash_note, log_problems, report
from faults_http import http_fuzz, send_raw
from faults_http_gen import Req, Target

pytestmark = [pytest.mark.faults, pytest.mark.e2e]

REQUESTS = 10_000  # on each surface
SEED = 16


@pytest.fixture(scope="module")
def found_fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """One daemon for the cases the fuzz found (each leaves it as it was)."""
    f = Fleet.start(tmp_path_factory.mktemp("found") / "state")
    try:
        yield f
    finally:
        f.stop()


def targets(fleet: Fleet) -> list[Target]:
    h = fleet.hive
    session = h.session()
    ports = {"dashboard": urllib.parse.urlsplit(h.url).port, "agent": urllib.parse.urlsplit(h.agent_url(FUZZED)).port}
    return [Target(kind, port, h.token, session.cookie, session.xsrf) for kind, port in ports.items() if port]


def test_http_fuzz_gets_no_5xx_and_crashes_nothing(fleet: Fleet) -> None:
    figs = http_fuzz(targets(fleet), 2 * REQUESTS, SEED)
    crashes = fleet.crashes()
    logged = log_problems(fleet.hive.log_path, fleet.hive.paths.agents / FUZZED / "harness.log")
    for fig in figs:
        report(f"{fig.summary()}; {crash_note(crashes)}")
    report(f"http fuzz: {len(logged)} tracebacks logged")
    assert [f.requests for f in figs] == [REQUESTS, REQUESTS]
    problems = [p for f in figs for p in f.problems()]
    assert not problems, "\n".join(problems)
    assert not crashes, crashes
    assert not logged, "\n".join(logged[:20])
    for fig in figs:  # the mix got past the gate, and was refused by it
        assert fig.outcomes[200] > 0 and fig.outcomes[401] > 0 and fig.outcomes[400] > 0, fig.summary()


@pytest.mark.parametrize(("surface", "request_line", "extra"), [
    # str.isdigit() takes "²" where int() does not: these were 500s and an aborted relay connection.
    ("dashboard", "GET /api/journal/m1nd?lines=%C2%B2", b""),
    ("agent", "POST /send", b"Content-Length: \xb2\r\n"),
    # os.path.realpath raises on NUL: the harness UI's static files answered 500.
    ("agent", "GET /static/%00", b""),
])
def test_found_by_the_fuzz(found_fleet: Fleet, surface: str, request_line: str, extra: bytes) -> None:
    fleet = found_fleet
    target = next(t for t in targets(fleet) if t.kind == surface)
    raw = (f"{request_line} HTTP/1.1\r\nHost: 127.0.0.1:{target.port}\r\nAuthorization: Bearer {target.token}\r\n"
           f"Connection: close\r\n").encode() + extra + b"\r\n"
    assert send_raw(target.port, Req(raw, True, request_line), 10) == 400
    assert not log_problems(fleet.hive.log_path, fleet.hive.paths.agents / FUZZED / "harness.log")
