"""What the fault suite's tests and `bench/faults.py` share: the daemon they
fuzz, what its log must never show, its file descriptors, and the figures
they report (tests/faults/conftest.py prints them at the end of the run)."""

from __future__ import annotations

import json
import os
import random
import socket
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from support import Hive, pid_alive, wait_for

__all__ = ["FIGURES", "FUZZED", "SINK", "Fleet", "crash_note", "fd_count", "log_problems", "report"]

FIGURES: list[str] = []  # "faults: …" lines, printed in pytest's terminal summary
FUZZED = "fz"  # the agent whose socket and web UI are fuzzed; it may message only SINK
SINK = "sink"  # stopped: what the fuzzed agent sends is stored, and wakes no harness
# Log events that mean an exception got out of a request's handler (each is logged
# where the daemon catches what it did not expect).
FAILED_EVENTS = frozenset({"socket.request_failed", "dashboard.request_failed", "web.failed",
                           "proxy.failed", "socket.unsent_failed"})


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


EPHEMERAL_LOW = max(21000, _ephemeral_low())


def _accepts(port: int | None) -> bool:
    assert port is not None
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def report(line: str) -> None:
    FIGURES.append(f"faults: {line}")


def crash_note(crashes: list[str]) -> str:
    """``N crashes``, and what they were."""
    return f"{len(crashes)} crashes" + (f" ({'; '.join(crashes)})" if crashes else "")


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@dataclass
class Fleet:
    """A daemon with ``FUZZED`` running (the builtin driver) and ``SINK`` stopped."""

    hive: Hive
    harness_pid: int

    @classmethod
    def start(cls, state_dir: Path) -> Fleet:
        # A permission question (should one get through) waits a second, not ten minutes.
        hive = Hive(state_dir, extra_args=["--permission-ttl-seconds", "1"])
        # The agents' sticky web ports below the kernel's ephemeral range: the fuzzing
        # and churn (here and in other tests) leave thousands of client ports in use there.
        hive.port_base = random.Random(str(state_dir)).randrange(20000, EPHEMERAL_LOW - 900)
        hive.start()
        try:
            hive.spawn(SINK)
            hive.admin("stop", name=SINK)
            hive.spawn(FUZZED, allowed_recipients=[SINK])
            pid = int(hive.ls()[FUZZED]["pid"])
            port = urllib.parse.urlsplit(hive.agent_url(FUZZED)).port
            wait_for(lambda: _accepts(port), what=f"the relay of {FUZZED}'s web UI on port {port}")
        except BaseException:
            hive.stop()
            raise
        return cls(hive, pid)

    @property
    def daemon_pid(self) -> int:
        assert self.hive.proc is not None
        return self.hive.proc.pid

    def crashes(self) -> list[str]:
        """Whatever says the daemon or the fuzzed agent's harness went down."""
        out = []
        assert self.hive.proc is not None
        if self.hive.proc.poll() is not None:
            out.append(f"the daemon exited with {self.hive.proc.returncode}")
            return out
        row = self.hive.ls()[FUZZED]
        if row["state"] != "running" or row["pid"] != self.harness_pid or row["restarts"]:
            out.append(f"{FUZZED}'s harness changed: {row['state']} pid {row['pid']} (was {self.harness_pid}), "
                       f"{row['restarts']} restarts, last exit {row['last_exit']}")
        if not pid_alive(self.harness_pid):
            out.append(f"{FUZZED}'s harness (pid {self.harness_pid}) is gone")
        return out

    def stop(self) -> None:
        self.hive.stop()


def log_problems(log: Path, agent_log: Path | None = None) -> list[str]:
    """Lines of the daemon's log (and an agent's harness log) that carry a
    traceback, an ``internal`` error, or an exception a handler did not expect."""
    out = []
    for path in (log, agent_log):
        if path is None or not path.exists():
            continue
        for raw in path.read_text(errors="replace").splitlines():
            try:
                event = json.loads(raw)
            except ValueError:
                if "Traceback" in raw:
                    out.append(f"{path.name}: {raw[:400]}")
                continue
            if not isinstance(event, dict):
                continue
            if ("exception" in event or event.get("event") in FAILED_EVENTS or event.get("code") == "internal"
                    or (event.get("logger") == "tornado.application" and event.get("level") == "error")):
                out.append(f"{path.name}: {raw[:600]}")
    return out
