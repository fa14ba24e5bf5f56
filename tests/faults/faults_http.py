"""HTTP fuzzing (issue 16, the fault suite): fuzzed requests (`faults_http_gen`) on
raw sockets, one per connection, several connections at once; what counts is
the status line of each answer (a websocket's 101 is closed at once).

A request left with its body short is closed right after it is written (the
server must drop it, never answer or hang); every other one must be answered,
or its connection closed, within ``timeout``: a hang is a failure too.
"""

from __future__ import annotations

import socket
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from faults_http_gen import HttpMixer, Req, Target
from faults_wire_gen import Pools

__all__ = ["HttpFigures", "http_fuzz", "send_raw"]


def send_raw(port: int, req: Req, timeout: float) -> int | str:
    """The status the server answered ``req`` with, or what happened instead:
    ``closed`` (no answer), ``reset``, ``timeout``, ``dropped`` (we closed a request left short)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(req.raw)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before it was all read (a huge head): the answer may still be there
        if not req.answered:
            return "dropped"
        buf = b""
        try:
            while b"\r\n" not in buf:
                chunk = s.recv(4096)
                if not chunk:
                    break
                buf += chunk
        except ConnectionResetError:
            if not buf:
                return "reset"
        except TimeoutError:
            return "timeout"
    line = buf.split(b"\r\n", 1)[0]
    parts = line.split(b" ", 2)
    if len(parts) >= 2 and parts[0].startswith(b"HTTP/") and parts[1].isdigit():
        return int(parts[1])
    return "closed" if not buf else "garbled"


@dataclass
class HttpFigures:
    kind: str
    requests: int = 0
    outcomes: Counter[int | str] = field(default_factory=Counter)
    server_errors: list[str] = field(default_factory=list)  # status >= 500, or an answer that is no HTTP
    hangs: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        answered = sum(n for k, n in self.outcomes.items() if isinstance(k, int))
        top = ", ".join(f"{k}: {n}" for k, n in sorted(self.outcomes.items(), key=lambda kv: -kv[1])[:8])
        return (f"http fuzz {self.kind} {self.requests} requests ({self.seconds:.0f} s): {answered} answered, "
                f"{len(self.server_errors)} 5xx, {len(self.hangs)} hangs ({top})")

    def problems(self) -> list[str]:
        return [f"{self.kind} {e}" for e in self.server_errors[:20]] + [f"{self.kind} hang: {h}" for h in
                                                                        self.hangs[:20]]


def http_fuzz(targets: list[Target], count: int, seed: int, workers: int = 8,
              timeout: float = 15.0) -> list[HttpFigures]:
    """``count`` requests spread over ``targets`` in turn, ``workers`` at once."""
    mixer = HttpMixer(Pools.draw(seed), seed)
    reqs = [(t, mixer.request(t)) for i in range(count) for t in [targets[i % len(targets)]]]
    figs = {t.kind: HttpFigures(t.kind) for t in targets}
    t0 = time.monotonic()

    def one(item: tuple[Target, Req]) -> tuple[Target, Req, int | str]:
        target, req = item
        try:
            return target, req, send_raw(target.port, req, timeout)
        except ConnectionRefusedError:
            return target, req, "refused"
        except OSError as exc:
            return target, req, f"error {type(exc).__name__}"

    with ThreadPoolExecutor(workers) as pool:
        for target, req, outcome in pool.map(one, reqs):
            fig = figs[target.kind]
            fig.requests += 1
            fig.outcomes[outcome] += 1
            if (isinstance(outcome, int) and outcome >= 500) or outcome == "garbled":
                fig.server_errors.append(f"{outcome} for {req.what!r}: {req.raw!r}")
            elif outcome in ("timeout", "refused") or str(outcome).startswith("error"):
                fig.hangs.append(f"{outcome} for {req.what!r}: {req.raw!r}")
    for fig in figs.values():
        fig.seconds = time.monotonic() - t0
    return list(figs.values())

