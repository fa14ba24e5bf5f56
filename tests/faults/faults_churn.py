"""Connection churn (issue 16, the fault suite): connections opened and dropped
at once, after part of a line or a request head, after a whole request whose
answer is never read, or reset; on an agent's socket, the admin socket and the
dashboard, a few at a time. Meanwhile the daemon's open file descriptors are
sampled (`/proc/<pid>/fd`); afterwards they must come back to where they were,
and every socket must still serve (an agent's socket refuses past 32 live
connections: one counted and never given back would show there)."""

from __future__ import annotations

import contextlib
import random
import socket
import struct
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from faults_common import fd_count
from support import wait_for

from hyperhive import client

__all__ = ["ChurnFigures", "Endpoints", "churn", "still_serving"]

UNIX_PATTERNS = ("close", "partial", "partial_long", "request_unread", "half_close", "garbage", "reset")
HTTP_PATTERNS = ("close", "partial_head", "request_unread", "half_close", "reset")


@dataclass(frozen=True)
class Endpoints:
    agent_socket: Path
    admin_socket: Path
    dashboard_port: int
    host: str  # the dashboard's Host header value


@dataclass
class ChurnFigures:
    connections: int = 0
    by_target: Counter[str] = field(default_factory=Counter)
    by_pattern: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)  # connects that failed (never a crash)
    fd_baseline: int = 0
    fd_peak: int = 0
    fd_after: int = 0
    settle_seconds: float = 0.0
    seconds: float = 0.0

    def summary(self) -> str:
        targets = ", ".join(f"{k} {v}" for k, v in sorted(self.by_target.items()))
        return (f"connection churn {self.connections} connections ({targets}; {self.seconds:.0f} s): fds "
                f"{self.fd_baseline} before, {self.fd_peak} at most, {self.fd_after} after "
                f"(back in {self.settle_seconds:.1f} s), {sum(self.errors.values())} connect errors")


def _unix(path: Path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(str(path))  # blocking: with a timeout, a full backlog is EAGAIN rather than a wait
    s.settimeout(10)
    return s


def _reset(s: socket.socket) -> None:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST on TCP


def _one(ep: Endpoints, target: str, pattern: str, salt: int) -> None:
    if target == "dashboard":
        s = socket.create_connection(("127.0.0.1", ep.dashboard_port), timeout=10)
        request = f"GET /api/state HTTP/1.1\r\nHost: {ep.host}\r\n\r\n".encode()
        with contextlib.closing(s):
            if pattern == "partial_head":
                s.sendall(request[: 1 + salt % (len(request) - 2)])
            elif pattern in ("request_unread", "half_close"):
                s.sendall(request)
                if pattern == "half_close":
                    s.shutdown(socket.SHUT_WR)
            elif pattern == "reset":
                s.sendall(request[:10])
                _reset(s)
        return
    s = _unix(ep.agent_socket if target == "agent" else ep.admin_socket)
    with contextlib.closing(s):
        if pattern == "partial":
            s.sendall(b'{"id":1,"op":"pi')
        elif pattern == "partial_long":
            s.sendall(b'{"id":1,"op":"send","to":"sink","body":"' + b"x" * (1000 + salt % 200_000))
        elif pattern in ("request_unread", "half_close"):
            s.sendall(b'{"id":1,"op":"ping"}\n{"id":2,"op":"recv","wait_seconds":5}\n' if target == "agent"
                      else b'{"id":1,"op":"ping"}\n{"id":2,"op":"ls"}\n')
            if pattern == "half_close":
                s.shutdown(socket.SHUT_WR)
        elif pattern == "garbage":
            s.sendall(random.Random(salt).randbytes(64) + b"\n")
        elif pattern == "reset":
            _reset(s)


def churn(ep: Endpoints, daemon_pid: int, count: int, seed: int, workers: int = 4,
          settle_timeout: float = 10.0, tolerance: int = 2) -> ChurnFigures:
    """``count`` connections to the agent's socket, and a tenth as many each to the
    admin socket and the dashboard, in a seeded random order."""
    rng = random.Random(seed)
    targets = ["agent"] * count + ["admin", "dashboard"] * (count // 10)
    rng.shuffle(targets)
    plan = [(t, rng.choice(HTTP_PATTERNS if t == "dashboard" else UNIX_PATTERNS), i) for i, t in enumerate(targets)]
    fig = ChurnFigures()
    still_serving(ep)  # every lazily made descriptor made before the baseline
    fig.fd_baseline = fd_count(daemon_pid)
    fig.fd_peak = fig.fd_baseline
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            fig.fd_peak = max(fig.fd_peak, fd_count(daemon_pid))
            stop.wait(0.05)

    def run(item: tuple[str, str, int]) -> tuple[str, str, str | None]:
        target, pattern, salt = item
        try:
            _one(ep, target, pattern, salt)
        except OSError as exc:
            return target, pattern, type(exc).__name__
        return target, pattern, None

    t0 = time.monotonic()
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        with ThreadPoolExecutor(workers) as pool:
            for target, pattern, error in pool.map(run, plan):
                fig.connections += 1
                fig.by_target[target] += 1
                fig.by_pattern[pattern] += 1
                if error is not None:
                    fig.errors[f"{target} {error}"] += 1
    finally:
        stop.set()
        sampler.join()
    fig.seconds = time.monotonic() - t0
    t1 = time.monotonic()
    try:
        fig.fd_after = wait_for(lambda: (n := fd_count(daemon_pid)) <= fig.fd_baseline + tolerance and n,
                                timeout=settle_timeout, interval=0.05, what="the daemon's fds back to baseline")
    except AssertionError:
        fig.fd_after = fd_count(daemon_pid)
    fig.settle_seconds = time.monotonic() - t1
    return fig


def still_serving(ep: Endpoints, rounds: int = 40) -> None:
    """More connections one after the other than an agent's socket takes at
    once, each answered; then the admin socket and the dashboard answer."""
    for _ in range(rounds):
        assert client.request(ep.agent_socket, "ping", timeout=10)["agent"]
    assert client.request(ep.admin_socket, "ping", timeout=10) is not None
    with socket.create_connection(("127.0.0.1", ep.dashboard_port), timeout=10) as s:
        s.sendall(f"GET /api/state HTTP/1.1\r\nHost: {ep.host}\r\nConnection: close\r\n\r\n".encode())
        assert s.recv(64).startswith(b"HTTP/1.1 401")  # no credentials: refused, but answered
