"""sd_notify (F39): a real datagram socket stands in for systemd."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import Hive, wait_for

from hyperhive import sdnotify


@pytest.mark.parametrize(("value", "address"), [
    ("/run/systemd/notify", "/run/systemd/notify"), ("@abstract-name", b"\0abstract-name"),
    ("", None), ("vsock:2:1234", None),
])
def test_notify_address(value: str, address: str | bytes | None) -> None:
    assert sdnotify.notify_address({"NOTIFY_SOCKET": value}) == address


@pytest.mark.parametrize(("env", "interval"), [
    ({"WATCHDOG_USEC": "400000"}, 0.2), ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "7"}, 15.0),
    ({"WATCHDOG_USEC": "400000", "WATCHDOG_PID": "8"}, None), ({}, None), ({"WATCHDOG_USEC": "0"}, None),
    ({"WATCHDOG_USEC": "soon"}, None),
])
def test_watchdog_interval_is_half_the_usec_for_this_pid(env: dict[str, str], interval: float | None) -> None:
    assert sdnotify.watchdog_interval(env, pid=7) == interval


def test_nothing_is_sent_without_notify_socket() -> None:
    assert sdnotify.ready({}) is None
    sdnotify.stopping(None)


def test_abstract_sockets_work() -> None:
    name = f"hyperhive-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind(b"\0" + name.encode())
        s.settimeout(5)
        n = sdnotify.ready({"NOTIFY_SOCKET": "@" + name})
        assert n is not None and n.watchdog is None
        assert s.recv(256) == b"READY=1"


class Listener:
    """Receives datagrams on a thread, noting whether the admin socket existed at each."""

    def __init__(self, path: Path, admin: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.admin = admin
        self.got: list[tuple[float, str, bool]] = []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.done.is_set():
            try:
                data = self.sock.recv(256)
            except TimeoutError:
                continue
            self.got.append((time.monotonic(), data.decode(), self.admin.exists()))

    def states(self) -> list[str]:
        return [g[1] for g in self.got]

    def close(self) -> None:
        self.done.set()
        self.thread.join(5)
        self.sock.close()


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[Listener]:
    lst = Listener(tmp_path / "notify.sock", tmp_path / "state" / "run" / "admin.sock")
    try:
        yield lst
    finally:
        lst.close()


@pytest.mark.e2e  # starts a daemon
def test_daemon_notifies_ready_after_binding_then_pings_the_watchdog(tmp_path: Path, listener: Listener) -> None:
    h = Hive(tmp_path / "state", env={"NOTIFY_SOCKET": str(tmp_path / "notify.sock"), "WATCHDOG_USEC": "400000"})
    h.start()
    try:
        wait_for(lambda: listener.states().count("WATCHDOG=1") >= 4, timeout=10, what="four watchdog pings")
        assert listener.states()[0] == "READY=1"
        assert listener.got[0][2], "READY=1 arrived before the admin socket existed"
        assert h.admin("ping")  # and the daemon answers
        pings = [t for t, state, _ in listener.got if state == "WATCHDOG=1"]
        gaps = [b - a for a, b in zip(pings, pings[1:], strict=False)]
        assert all(0.1 < g < 0.5 for g in gaps), gaps  # every 0.2 s (half of 400 ms)
    finally:
        h.stop()
    assert h.proc is not None and h.proc.returncode == 0
    wait_for(lambda: "STOPPING=1" in listener.states(), timeout=5, what="STOPPING=1")
    assert listener.states().count("READY=1") == 1
    ready = [e for e in h.log_events() if e["event"] == "sdnotify.ready"]
    assert [e["watchdog_seconds"] for e in ready] == [0.2]


@pytest.mark.e2e  # starts a daemon
def test_daemon_without_notify_socket_does_not_notify(tmp_path: Path) -> None:
    h = Hive(tmp_path / "state", env={"NOTIFY_SOCKET": "", "WATCHDOG_USEC": "400000"})
    h.start()
    wait_for(lambda: any(e["event"] == "daemon.ready" for e in h.log_events()), what="daemon.ready")
    h.stop()
    events = [e["event"] for e in h.log_events()]
    assert "daemon.stopped" in events and "sdnotify.ready" not in events
