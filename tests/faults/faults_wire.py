"""Wire fuzzing (issue 16, the fault suite): fuzzed lines on one connection to an
agent's socket, each followed by a ``ping`` (the lines: `faults_wire_gen`).

`WireRun` pipelines: a writer thread sends what `feed` renders, a reader
thread takes the replies as they come (a peer that does not read is cut off
past 4 MiB of replies), while the next lines are made. Every line but a blank
one gets exactly one reply, and every ping its own: `finish` waits for all of
them, so a connection the daemon dropped, or a reply that never came, shows.
Replies may come out of order (each request is a task); an ``internal`` one
names the line it answers by its id, the line's sequence number.
"""

from __future__ import annotations

import contextlib
import json
import queue
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from faults_wire_gen import PING, Line, Mixer, Pools, expects_reply, render

from hyperhive import errors

__all__ = ["WireFigures", "WireRun", "wire_fuzz"]

WIRE_CODES = frozenset(code for code, cls in errors._BY_CODE.items() if cls.on_wire)


@dataclass
class WireFigures:
    lines: int = 0  # fuzzed lines sent
    expected: int = 0  # of them, the ones that get a reply
    replies: int = 0  # replies to the fuzzed lines
    pings: int = 0  # our pings answered ok
    ok: int = 0  # fuzzed lines answered ok
    codes: Counter[str] = field(default_factory=Counter)  # error codes of the others
    internal: list[str] = field(default_factory=list)  # `internal` replies, with the start of their line
    unknown_codes: list[str] = field(default_factory=list)  # error codes errors.py does not declare
    bad_replies: list[str] = field(default_factory=list)  # replies that were no JSON object with ok
    bad_pings: list[str] = field(default_factory=list)  # our pings answered otherwise
    closed_early: bool = False  # the daemon closed the connection with replies owed
    bytes_sent: int = 0
    seconds: float = 0.0

    def summary(self) -> str:
        return (f"wire fuzz {self.lines} lines ({self.bytes_sent / 1e6:.0f} MB, {self.seconds:.0f} s): "
                f"{self.replies}/{self.expected} replies ({self.ok} ok), {self.pings}/{self.lines} pings after, "
                f"{len(self.internal)} internal, {len(self.unknown_codes)} unknown codes, "
                f"{len(self.bad_replies)} bad replies, connection {'dropped' if self.closed_early else 'kept'} "
                f"({', '.join(f'{code} {n}' for code, n in self.codes.most_common())})")

    def problems(self) -> list[str]:
        out = [f"internal: {i}" for i in self.internal[:20]]
        out += [f"unknown code: {u}" for u in self.unknown_codes[:20]]
        out += [f"bad reply: {b}" for b in self.bad_replies[:20]]
        out += [f"bad ping reply: {b}" for b in self.bad_pings[:20]]
        if self.closed_early:
            out.append(f"the daemon closed the connection after {self.replies} replies and {self.pings} pings")
        if self.replies != self.expected or self.pings != self.lines:
            out.append(f"{self.replies}/{self.expected} replies and {self.pings}/{self.lines} pings came back")
        return out


class WireRun:
    """One connection to ``path``: `feed` lines (each followed by our ping), `finish` waits for every reply."""

    def __init__(self, path: Path, chunk: int = 1 << 16) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(str(path))
        self.fig = WireFigures()
        self._chunk = chunk
        self._buf = bytearray()
        self._out: queue.Queue[bytes | None] = queue.Queue(maxsize=64)
        self._starts: dict[int, bytes] = {}
        self._pinged = bytearray()  # by sequence number: 1 once its ping was answered
        self._done = threading.Condition()
        self._write_error: OSError | None = None
        self._finishing = False
        self._t0 = time.monotonic()
        self._writer = threading.Thread(target=self._write_loop, daemon=True)
        self._reader = threading.Thread(target=self._read_loop, daemon=True)
        self._writer.start()
        self._reader.start()

    def feed(self, line: Line) -> None:
        if self._write_error is not None or self.fig.closed_early:
            raise ConnectionError(f"the connection broke after {self.fig.lines} lines: {self._write_error!r}")
        seq = self.fig.lines
        data = render(line, seq)
        self._starts[seq] = data[:120]
        with self._done:
            self.fig.lines += 1
            self.fig.expected += expects_reply(data)
        self._buf += data + b'\n{"id":"' + PING.encode() + str(seq).encode() + b'","op":"ping"}\n'
        if len(self._buf) >= self._chunk:
            self._flush()

    def _flush(self) -> None:
        self.fig.bytes_sent += len(self._buf)
        self._out.put(bytes(self._buf))
        self._buf.clear()

    def finish(self, timeout: float = 60.0) -> WireFigures:
        """Flush, wait for every reply (or the deadline, or the daemon closing), close."""
        self._flush()
        self._out.put(None)
        end = time.monotonic() + timeout
        with self._done:
            while not self._complete() and not self.fig.closed_early and time.monotonic() < end:
                self._done.wait(0.2)
        self._finishing = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self._reader.join(10)
        self._writer.join(10)
        self.sock.close()
        self.fig.seconds = time.monotonic() - self._t0
        return self.fig

    def _complete(self) -> bool:
        f = self.fig
        return f.pings + len(f.bad_pings) >= f.lines and f.replies >= f.expected

    def _write_loop(self) -> None:
        try:
            while (data := self._out.get()) is not None:
                self.sock.sendall(data)
        except OSError as exc:
            self._write_error = exc
            while self._out.get() is not None:  # let feed() and finish() go on
                pass

    def _read_loop(self) -> None:
        rest = b""
        try:
            while chunk := self.sock.recv(1 << 18):
                *whole, rest = (rest + chunk).split(b"\n")
                with self._done:
                    for raw in whole:
                        self._take(raw)
                    self._done.notify_all()
        except OSError:
            pass
        with self._done:
            if not self._complete() and not self._finishing:
                self.fig.closed_early = True
            self._done.notify_all()

    def _take(self, raw: bytes) -> None:
        fig = self.fig
        try:
            reply = json.loads(raw.decode("utf-8"))
            if not isinstance(reply, dict) or not isinstance(reply.get("ok"), bool):
                raise ValueError("no object with ok")
        except ValueError:
            fig.bad_replies.append(raw[:300].decode("utf-8", "replace"))
            return
        rid = reply.get("id")
        if isinstance(rid, str) and rid.startswith(PING) and rid[len(PING):].isdigit():
            seq = int(rid[len(PING):])
            if seq >= len(self._pinged):
                self._pinged.extend(bytes(seq + 1 - len(self._pinged) + (1 << 16)))
            if self._pinged[seq]:
                fig.bad_pings.append(f"answered twice: {rid}")
            elif reply["ok"] and reply.get("agent"):
                self._pinged[seq] = 1
                fig.pings += 1
            else:
                fig.bad_pings.append(raw[:300].decode("utf-8", "replace"))
            return
        fig.replies += 1
        if reply["ok"]:
            fig.ok += 1
            return
        error: dict[str, Any] = reply["error"] if isinstance(reply.get("error"), dict) else {}
        code = str(error.get("code"))
        fig.codes[code] += 1
        if code == "internal":
            start = self._starts.get(rid, b"?") if isinstance(rid, int) and not isinstance(rid, bool) else b"?"
            fig.internal.append(f"{error.get('message')!r} for line {rid!r}: {start!r}")
        elif code not in WIRE_CODES:
            fig.unknown_codes.append(raw[:300].decode("utf-8", "replace"))


def wire_fuzz(path: Path, count: int, seed: int, long_every: int = 1000, timeout: float = 120.0) -> WireFigures:
    """``count`` fuzzed lines on one connection to the socket at ``path``."""
    mixer = Mixer(Pools.draw(seed), seed, long_every=long_every)
    run = WireRun(path)
    try:
        for _ in range(count):
            run.feed(mixer.line())
    except ConnectionError:
        pass  # finish() tells what came back
    return run.finish(timeout)
