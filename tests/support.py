"""Test support: a real `hive serve` subprocess on a temp state dir, and
waiting on conditions with deadlines (never on luck)."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from hyperhive import client
from hyperhive.errors import Unavailable
from hyperhive.paths import StatePaths

T = TypeVar("T")


def wait_for(pred: Callable[[], T], timeout: float = 10.0, interval: float = 0.02, what: str = "") -> T:
    """Poll ``pred`` until it returns something truthy; fail after ``timeout``."""
    end = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            value = pred()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - keep polling until the deadline
            last_exc = exc
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or pred}; last error: {last_exc!r}")
        time.sleep(interval)


async def async_wait_for(pred: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02, what: str = "") -> Any:
    end = time.monotonic() + timeout
    while True:
        value = await pred() if asyncio.iscoroutinefunction(pred) else pred()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or pred}")
        await asyncio.sleep(interval)


class Hive:
    """A daemon subprocess the test owns (stopped by pid at teardown)."""

    def __init__(self, state_dir: Path, extra_args: list[str] | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.state_dir = state_dir
        self.paths = StatePaths(state_dir)
        self.extra_args = extra_args or []
        self.env = env or {}  # added to (and overriding) the test's own environment
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = state_dir.parent / f"{state_dir.name}-daemon.log"
        # Agents' sticky web ports (F20) per daemon: daemons of other tests (or other
        # checkouts) on this machine must not fight over the same ports. Fixed per
        # Hive, so a restarted daemon finds its ports again.
        self.port_base = random.Random(str(state_dir)).randrange(20000, 60000)

    def start(self) -> Hive:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        passable(self.state_dir)
        self.dashboard_port_file.unlink(missing_ok=True)  # a killed daemon's leftover
        log = open(self.log_path, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hyperhive", "--state-dir", str(self.state_dir), "serve",
             "--listen", "127.0.0.1:0", "--agent-port-base", str(self.port_base), *self.extra_args],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, **self.env},
        )
        log.close()
        wait_for(self._up, timeout=30, what="daemon admin socket")
        return self

    def _up(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"daemon exited {self.proc.returncode}:\n{self.log_path.read_text()[-4000:]}")
        try:
            self.admin("ping")
            return True
        except Unavailable:
            return False

    @property
    def dashboard_port_file(self) -> Path:
        return self.state_dir / "run" / "dashboard.port"

    @property
    def url(self) -> str:
        """The dashboard's base URL (the daemon writes its bound port at start)."""
        text = wait_for(lambda: self.dashboard_port_file.exists() and self.dashboard_port_file.read_text().strip(),
                        timeout=30, what="run/dashboard.port")
        return f"http://127.0.0.1:{int(text)}"

    def admin(self, op: str, **fields: Any) -> dict[str, Any]:
        return client.request(self.paths.admin_socket, op, timeout=60, **fields)

    def ls(self) -> dict[str, dict[str, Any]]:
        return {c["name"]: c for c in self.admin("ls")["containers"]}

    def socket(self, name: str) -> Path:
        return self.paths.socket(name)  # type: ignore[arg-type]

    def spawn(self, name: str, **fields: Any) -> dict[str, Any]:
        c = self.admin("spawn", name=name, **fields)["container"]
        # Ready when its harness has parked its system recv.
        wait_for(lambda: self.ls()[name]["parked"]["system"] >= 1, timeout=30, what=f"{name}'s harness")
        return c

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def log_events(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out


def passable(path: Path) -> None:
    """Let other uids pass (o+x, never read) every dir down to ``path``: a root
    daemon starts each agent as its own uid, and pytest's tmp dirs are 0700."""
    for d in [*reversed(path.resolve().parents), path.resolve()]:
        mode = d.stat().st_mode
        if not mode & 0o001:
            os.chmod(d, mode | 0o001)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
