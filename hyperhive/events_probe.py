"""A hibernating agent's history, read from its events db without the daemon
opening it (issue 17).

The events db is the agent's to write (``state/hyperhive-events.sqlite``), so
it may be any file a hostile agent likes. The daemon never opens it: it runs a
few lines of Python where a crafted file can do no harm, in the workspace
probe's sandbox (``workspace_status_probe.run_inside``: the agent's state dir
read-only at /work, as the agent's uid, in its cgroup, no network, timed,
output capped), on a copy of the database in that sandbox's own /tmp (at most
``COPY_CAP``: its last writes may be in its WAL), its schema untrusted. What
comes back is the agent's to shape: each line is parsed by the wire's rules
and kept only if it is an event row (an int id, a number ts, a short kind, a
JSON object of data); the rest is dropped.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import hyperhive.logs as logs
from hyperhive import wire
from hyperhive.errors import HiveError
from hyperhive.harness.bus import RING_SIZE  # as many as the harness's own history holds
from hyperhive.sandbox import view as sv
from hyperhive.store.events_db import EVENTS_FILE
from hyperhive.workspace_status_probe import INSIDE, ProbeFailed, run_inside

__all__ = ["READER", "parse_rows", "read_history"]

_log = logs.get("hyperhive.events_probe")

COPY_CAP = 256 << 20  # bytes of db and WAL the reader copies at most (its sandbox's /tmp, the agent's memory)
_KIND_MAX = 64

# Run inside: only the standard library, on /work (the state dir, read-only).
READER = f"""
import json, os, shutil, sqlite3, sys
src = {INSIDE!r} + "/" + {EVENTS_FILE!r}
if not os.path.isfile(src):
    sys.exit(0)
# A copy in this sandbox's own /tmp: the log's last writes may be in its WAL, which
# a read-only open of the original could not replay. A copy past the cap is not read.
size = sum(os.path.getsize(src + x) for x in ("", "-wal") if os.path.isfile(src + x))
if size > {COPY_CAP}:
    sys.exit(3)
for x in ("", "-wal"):
    if os.path.isfile(src + x):
        shutil.copyfile(src + x, "/tmp/events.sqlite" + x)
db = sqlite3.connect("/tmp/events.sqlite")
db.execute("PRAGMA trusted_schema = OFF")
rows = db.execute("SELECT id, ts, kind, data FROM events ORDER BY id DESC LIMIT ?", (int(sys.argv[1]),))
for r in reversed(rows.fetchall()):
    sys.stdout.write(json.dumps(list(r)) + "\\n")
"""


def parse_rows(out: bytes) -> list[dict[str, Any]]:
    """The event rows of the reader's output, as ``EventRow.to_wire`` gives them (pure)."""
    rows: list[dict[str, Any]] = []
    for line in out.splitlines():
        try:
            row = wire.loads(line)
            if not (isinstance(row, list) and len(row) == 4):
                continue
            rid, ts, kind, data = row
            if not (isinstance(rid, int) and not isinstance(rid, bool) and isinstance(ts, int | float)
                    and not isinstance(ts, bool) and isinstance(kind, str) and 0 < len(kind) <= _KIND_MAX
                    and isinstance(data, str)):
                continue
            parsed = wire.loads(data)
        except HiveError:
            continue
        if isinstance(parsed, dict):
            rows.append({"id": rid, "ts": float(ts), "kind": kind, "data": parsed})
    return rows


def read_history(state_dir: Path, limit: int = RING_SIZE, deadline: float | None = None) -> list[dict[str, Any]]:
    """The agent's last ``limit`` events, oldest first; [] when there is nothing to read.
    Runs a sandboxed process: call it off the loop."""
    system = (*sv.host_system_entries(), *(("dir", d) for d in sv.runtime_dirs()))
    # The interpreter itself (not a venv's link to it): only the standard library is needed.
    inner = [os.path.realpath(sys.executable), "-I", "-S", "-c", READER, str(limit)]
    t0 = time.monotonic()
    try:
        out = run_inside(state_dir, inner, "reading the events db", deadline=deadline, system=system)
    except ProbeFailed as exc:
        _log.warning("events_probe.failed", agent=state_dir.parent.name, error=str(exc))
        return []
    rows = parse_rows(out)
    _log.info("events_probe.read", agent=state_dir.parent.name, rows=len(rows),
              ms=round((time.monotonic() - t0) * 1000, 1))
    return rows

