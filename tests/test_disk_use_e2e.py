"""Disk use per agent end to end (issue 16): a real daemon measuring each
agent's dir every second (``--disk-interval-seconds 1``); a file of known
size in an agent's workspace shows on `hive ls`, the admin ``ls``,
``/api/state`` and ``/metrics``; a workspace of 300k files leaves ``ls``
fast while its walk stops at its bound, marked incomplete."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from support import Hive, wait_for

pytestmark = pytest.mark.e2e  # every test here starts a daemon

MIB = 1 << 20


@pytest.fixture(scope="module")
def hive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hive]:
    h = Hive(tmp_path_factory.mktemp("disk") / "state", ["--disk-interval-seconds", "1"]).start()
    try:
        yield h
    finally:
        h.stop()


def disk_of(hive: Hive, name: str) -> dict[str, Any] | None:
    got: dict[str, Any] | None = hive.ls()[name].get("disk")
    return got


def gauge(hive: Hive, name: str) -> float | None:
    status, body = hive.get("/metrics")
    assert status == 200
    for fam in text_string_to_metric_families(body.decode()):
        if fam.name == "hyperhive_agent_disk_bytes":
            for s in fam.samples:
                if s.labels.get("agent") == name:
                    return float(s.value)
    return None


def test_a_known_file_shows_everywhere(hive: Hive) -> None:
    hive.spawn("alice")
    before = wait_for(lambda: disk_of(hive, "alice"), timeout=30, what="alice's first figure")
    assert set(before) == {"bytes", "files", "complete", "at"} and before["complete"] is True
    blob = hive.paths.workspace("alice") / "blob.bin"  # type: ignore[arg-type]
    blob.write_bytes(os.urandom(8 * MIB))
    blocks = os.lstat(blob).st_blocks * 512
    after = wait_for(lambda: (d := disk_of(hive, "alice")) and d["bytes"] >= before["bytes"] + blocks and d,
                     timeout=30, what="the blob counted")
    assert after["complete"] is True and after["files"] >= before["files"] + 1
    r = subprocess.run([sys.executable, "-m", "hyperhive", "--state-dir", str(hive.state_dir), "ls"],
                       capture_output=True, text=True, timeout=60, check=True)
    header, *rows = r.stdout.splitlines()
    at = header.index("DISK")
    [line] = [ln for ln in rows if ln.split()[0] == "alice"]
    cell = line[at:].split()[0]
    assert cell.endswith("M") and not cell.startswith("≥") and float(cell[:-1]) >= 8, line
    status, state = hive.get_json("/api/state")
    assert status == 200
    [row] = [c for c in state["state"]["containers"] if c["name"] == "alice"]
    assert row["disk"]["bytes"] >= before["bytes"] + blocks and row["disk_text"].endswith("M")
    assert wait_for(lambda: (g := gauge(hive, "alice")) is not None and g >= before["bytes"] + blocks,
                    timeout=30, what="the gauge")


def test_hostile_file_count_keeps_ls_fast_and_is_bounded(hive: Hive) -> None:
    hive.spawn("hog")
    heap = hive.paths.workspace("hog") / "heap"  # type: ignore[arg-type]
    heap.mkdir()
    for i in range(300_000):
        os.close(os.open(heap / f"{i}", os.O_CREAT | os.O_WRONLY, 0o600))
    got = wait_for(lambda: (d := disk_of(hive, "hog")) and d["complete"] is False and d,
                   timeout=60, what="hog's bounded walk")
    assert got["files"] <= 200_010  # stopped at the entry bound (or sooner, at its 2 s)
    # The meter walks hog again every second: ls answers from its cache meanwhile.
    worst = 0.0
    for _ in range(10):
        start = time.monotonic()
        rows = hive.ls()
        worst = max(worst, time.monotonic() - start)
        assert rows["hog"]["disk"]["complete"] is False
    assert worst < 1.0, worst
    r = subprocess.run([sys.executable, "-m", "hyperhive", "--state-dir", str(hive.state_dir), "ls"],
                       capture_output=True, text=True, timeout=60, check=True)
    header, *lines = r.stdout.splitlines()
    [line] = [ln for ln in lines if ln.split()[0] == "hog"]
    assert line[header.index("DISK"):].startswith("≥"), line
