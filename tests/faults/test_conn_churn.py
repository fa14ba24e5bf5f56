"""Connection churn (issue 16): 10,000 connections opened and dropped on an
agent's socket (at once, after part of a line, after requests whose answers
are never read, after garbage, reset), and 1,000 each on the admin socket and
the dashboard (there after part of a request head, too). The daemon's file descriptors come back to their
baseline (within 2, within 10 s), every socket still serves, nothing crashed."""

from __future__ import annotations

import urllib.parse

import pytest
from faults_churn import Endpoints, churn, still_serving
from faults_common import FUZZED, Fleet, crash_note, log_problems, report

pytestmark = [pytest.mark.faults, pytest.mark.e2e]

CONNECTIONS = 10_000
SEED = 16
TOLERANCE = 2


def test_connection_churn_gives_every_descriptor_back(fleet: Fleet) -> None:
    h = fleet.hive
    port = urllib.parse.urlsplit(h.url).port
    assert port is not None
    ep = Endpoints(h.socket(FUZZED), h.paths.admin_socket, port, f"127.0.0.1:{port}")
    fig = churn(ep, fleet.daemon_pid, CONNECTIONS, SEED, tolerance=TOLERANCE)
    crashes = fleet.crashes()
    report(f"{fig.summary()}; {crash_note(crashes)}")
    assert fig.by_target["agent"] == CONNECTIONS and fig.connections == CONNECTIONS * 12 // 10
    assert fig.fd_after <= fig.fd_baseline + TOLERANCE, fig.summary()
    assert not fig.errors, fig.errors
    assert not crashes, crashes
    still_serving(ep)
    assert not log_problems(h.log_path)
