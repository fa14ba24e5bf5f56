"""What both benchmarks share: `hive serve` as a subprocess they stop by pid,
a blocking JSON-lines connection, percentiles, and host CPU readings."""

from __future__ import annotations

import itertools
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


class LineConn:
    """A blocking JSON-lines connection: write requests, read responses in order."""

    def __init__(self, path: Path, timeout: float = 60.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(str(path))
        self._buf = b""
        self._ids = itertools.count(1)

    def write(self, op: str, **fields: Any) -> int:
        rid = next(self._ids)
        self.sock.sendall(
            json.dumps({"id": rid, "op": op, **fields}, separators=(",", ":")).encode() + b"\n"
        )
        return rid

    def read(self) -> dict[str, Any]:
        while True:
            nl = self._buf.find(b"\n")
            if nl >= 0:
                line, self._buf = self._buf[:nl], self._buf[nl + 1:]
                return json.loads(line)
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise ConnectionError("daemon closed the connection")
            self._buf += chunk

    def call(self, op: str, **fields: Any) -> dict[str, Any]:
        rid = self.write(op, **fields)
        resp = self.read()
        if resp.get("id") != rid or not resp.get("ok"):
            raise RuntimeError(f"{op} failed: {resp}")
        return resp

    def close(self) -> None:
        self.sock.close()


class DaemonProc:
    """`hive serve` as a subprocess on its own state dir; stopped by pid."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.admin_path = state_dir / "run" / "admin.sock"
        self.log_path = state_dir / "daemon.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def argv(self) -> list[str]:
        return [sys.executable, "-m", "hyperhive", "--state-dir", str(self.state_dir),
                "serve", "--listen", "127.0.0.1:0", "--sandbox", "off"]

    def start(self, timeout: float = 30.0) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "wb")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(self.argv(), cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        log.close()
        end = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited with {self.proc.returncode}; see {self.log_path}")
            try:
                self.admin("ping")
                return
            except (OSError, RuntimeError):
                if time.monotonic() > end:
                    raise RuntimeError(f"daemon not ready after {timeout}s; see {self.log_path}") from None
                time.sleep(0.05)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def admin(self, op: str, **fields: Any) -> dict[str, Any]:
        c = LineConn(self.admin_path)
        try:
            return c.call(op, **fields)
        finally:
            c.close()

    def container(self, name: str) -> dict[str, Any]:
        for c in self.admin("ls")["containers"]:
            if c["name"] == name:
                return c
        raise KeyError(name)

    def agent_socket(self, name: str) -> Path:
        return self.state_dir / "agents" / name / "run" / "hive.sock"

    def spawn_stopped(self, name: str) -> None:
        """Spawn an agent and stop its harness: its socket stays open, nobody reads its inbox."""
        self.admin("spawn", name=name)
        self.admin("stop", name=name)

    def stop(self) -> None:
        """SIGTERM our daemon by pid; SIGKILL it (by pid) if it does not go."""
        if self.proc is None or self.proc.poll() is not None:
            return
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        # Harnesses outlive a daemon killed outright (issue 16): ours end with the bench.
        from hyperhive.backends.local_adopt import end_left_running

        end_left_running(self.state_dir / "agents")


def drain(conn: LineConn) -> int:
    """Take whatever is already in the inbox (e.g. the spawn kick)."""
    n = 0
    while msgs := conn.call("recv", wait_seconds=0)["messages"]:
        n += len(msgs)
    return n


def percentile(sorted_vals: list[float], q: float) -> float:
    k = max(0, min(len(sorted_vals) - 1, math.ceil(q * len(sorted_vals)) - 1))
    return sorted_vals[k]


def host_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of the whole host."""
    with open("/proc/stat") as f:
        vals = [int(v) for v in f.readline().split()[1:]]
    idle = vals[3] + vals[4]
    return sum(vals) - idle, sum(vals)


def host_load_note(seconds: float = 1.0, skew: str = "low") -> str:
    """How busy the host is before we start: other load skews every figure here."""
    b0, t0 = host_cpu()
    time.sleep(seconds)
    b1, t1 = host_cpu()
    busy = (b1 - b0) / max(1, t1 - t0)
    note = f"host busy before start: {busy:.0%} of {os.cpu_count()} CPUs, loadavg {os.getloadavg()[0]:.2f}"
    return note + (f"  (WARNING: other load on this host; figures will be {skew} and noisy)" if busy > 0.10 else "")


class SyncDaemon(DaemonProc):
    """`hive serve --db-synchronous MODE`."""

    def __init__(self, state_dir: Path, synchronous: str) -> None:
        super().__init__(state_dir)
        self.synchronous = synchronous

    def argv(self) -> list[str]:
        return [*super().argv(), "--db-synchronous", self.synchronous]

    def opened_as(self) -> str:
        """What the daemon's own connection reads back (its `store.opened` log line)."""
        for line in self.log_path.read_text().splitlines():
            if '"store.opened"' in line:
                return str(json.loads(line).get("synchronous"))
        return "?"
