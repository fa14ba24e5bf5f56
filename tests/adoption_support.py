"""What the adoption tests share (issue 16): a daemon fixture whose last stop
stops every agent whatever the test did, and a few views of it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from support import Hive, wait_for

__all__ = ["REPLY", "ask", "events", "kept_hive", "pids"]

REPLY = '[builtin reply from {name}] you said: "{body}"'


def kept_hive(tmp_path: Path) -> Iterator[Hive]:
    """The body of a ``hive`` fixture: not started; at the end the agents are stopped
    by a daemon (one is started again when the test left none: killed or handed over)."""
    h = Hive(tmp_path / "state")
    try:
        yield h
    finally:
        h.extra_args = []  # whatever the test ran, the last stop stops the agents
        if h.proc is not None and h.proc.poll() is not None:
            h.start()
        h.stop()  # (and, should a test have failed half way, support.reap_harnesses)


def pids(hive: Hive) -> dict[str, int]:
    """The running containers' pids (``hive ls``)."""
    return {n: c["pid"] for n, c in hive.ls().items() if c["state"] == "running"}


def events(hive: Hive, name: str, since: int = 0) -> list[dict[str, Any]]:
    """The daemon log's events called ``name`` (from line ``since`` on)."""
    return [e for e in hive.log_events()[since:] if e.get("event") == name]


def ask(hive: Hive, name: str, body: str, timeout: float = 30) -> None:
    """Send ``body`` to a builtin agent as the operator and wait for its reply."""
    hive.admin("send", to=name, body=body)
    want = REPLY.format(name=name, body=body)
    wait_for(lambda: any(m["body"] == want for m in hive.admin("inbox", limit=50)["messages"]),
             timeout=timeout, what=f"{name}'s builtin reply to {body!r}")
