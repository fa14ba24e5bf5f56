"""Wire fuzzing (issue 16): 100,000 fuzzed lines on an agent's socket (one
connection, each line followed by a ping). No reply is ``internal``, every
line and every ping is answered on the same connection (so it stays usable
after every error), the daemon and the agent's harness stay up, and the log
holds no traceback."""

from __future__ import annotations

import pytest
from faults_common import FUZZED, Fleet, crash_note, log_problems, report
from faults_wire import wire_fuzz

pytestmark = [pytest.mark.faults, pytest.mark.e2e]

LINES = 100_000
SEED = 16


def test_wire_fuzz_leaves_no_internal_error_and_the_connection_usable(fleet: Fleet) -> None:
    fig = wire_fuzz(fleet.hive.socket(FUZZED), LINES, SEED)
    crashes = fleet.crashes()
    logged = log_problems(fleet.hive.log_path)
    report(f"{fig.summary()}; {crash_note(crashes)}, {len(logged)} tracebacks logged")
    assert fig.lines == LINES
    assert not fig.problems(), "\n".join(fig.problems())
    assert not crashes, crashes
    assert not logged, "\n".join(logged[:20])
    assert fig.codes["line_too_long"] > 0 and fig.ok > 0  # the mix reached past the limit and the ops themselves
