"""Test support: an agent harness subprocess the test owns (real `hive harness`
against a real daemon's agent socket), its web UI over loopback HTTP, and its
events straight from the agent's events sqlite."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from typing import Any

from support import Hive, OperatorAuth, pid_alive, require_e2e, wait_for

from hyperhive import client
from hyperhive.store.events_db import EventLog

__all__ = ["HarnessProc", "claude_env", "take_over"]

# Loopback only, never a proxy; the operator's Bearer token where the UI is a daemon's relay (issue 12).
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}), OperatorAuth())


def claude_env(fake_env: dict[str, str], **extra: str) -> dict[str, str]:
    """The harness's environment: ours, pointed at the scripted API server."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "HYPERHIVE_CLAUDE"))}
    env.update(fake_env)
    env.update(extra)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def take_over(hive: Hive, name: str) -> None:
    """Spawn ``name`` in the daemon and stop its daemon-run harness at once: the
    test runs the agent's harness itself (the socket stays bound). The spawn's
    kick is drained, so the test's harness starts on an empty inbox."""
    # Boot first: a spawn the daemon takes before its boot gets a boot-time kick too.
    wait_for(lambda: "m1nd" in hive.ls(), what="the daemon's boot")
    hive.admin("spawn", name=name)
    pid = wait_for(lambda: hive.ls()[name]["state"] == "running" and hive.ls()[name]["pid"], what=f"{name} running")
    hive.admin("stop", name=name)
    wait_for(lambda: hive.ls()[name]["state"] == "stopped" and not pid_alive(pid), what=f"{name} stopped")
    client.request(hive.socket(name), "recv", wait_seconds=0)


class HarnessProc:
    def __init__(self, hive: Hive, name: str, driver: str, env: dict[str, str],
                 wrap: list[str] | None = None) -> None:
        self.hive = hive
        self.name = name
        self.driver = driver
        self.env = env
        self.wrap = wrap or []
        self.state_dir = hive.paths.state(name)  # type: ignore[arg-type]
        self.log_path = self.state_dir / "test-harness.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    def start(self) -> HarnessProc:
        require_e2e("a harness subprocess (tests/agent_harness.HarnessProc.start)")
        port_file = self.state_dir / "web.port"
        port_file.unlink(missing_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [*self.wrap, sys.executable, "-m", "hyperhive", "harness", "--name", self.name,
                 "--socket", str(self.hive.socket(self.name)), "--state-dir", str(self.state_dir),
                 "--driver", self.driver, "--web-port", "0"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self.env,
                cwd=self.state_dir, start_new_session=True,
            )
        wait_for(lambda: self._alive() and port_file.exists() and port_file.read_text().strip(),
                 timeout=30, what=f"{self.name}'s web.port")
        self.port = int(port_file.read_text())
        wait_for(lambda: any(e["kind"] == "ready" for e in self.events()), what=f"{self.name} ready")
        # Ready for work once its system recv is parked in the daemon.
        wait_for(lambda: self.hive.ls()[self.name]["parked"]["system"] >= 1, timeout=20,
                 what=f"{self.name}'s system recv")
        return self

    def _alive(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"harness exited {self.proc.returncode}:\n{self.log_text()[-4000:]}")
        return True

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait(5)

    # --- the events sqlite ------------------------------------------------------

    def events(self) -> list[dict[str, Any]]:
        log = EventLog.in_state_dir(self.state_dir)
        try:
            return [e.to_wire() for e in log.tail(10_000)]
        finally:
            log.close()

    def kinds(self, after: int = 0) -> list[str]:
        return [e["kind"] for e in self.events() if e["id"] > after]

    def last_id(self) -> int:
        ev = self.events()
        return ev[-1]["id"] if ev else 0

    def wait(self, pred: Any, timeout: float = 30, what: str = "") -> Any:
        """`wait_for`, failing with this harness's events and log tail."""
        try:
            return wait_for(pred, timeout=timeout, interval=0.05, what=what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nevents: {self.kinds()}\nlog:\n{self.log_text()[-3000:]}") from None

    def wait_kind(self, kind: str, after: int = 0, timeout: float = 30) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            self._alive()
            return next((e for e in self.events() if e["id"] > after and e["kind"] == kind), None)
        event: dict[str, Any] = self.wait(found, timeout=timeout, what=f"{self.name}: {kind} after #{after}")
        return event

    # --- the web UI -------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str) -> Any:
        with _OPENER.open(self.url + path, timeout=10) as r:
            return json.loads(r.read())

    def post(self, path: str, body: dict[str, Any] | None = None,
             content_type: str = "application/json") -> tuple[int, Any]:
        req = urllib.request.Request(self.url + path, data=json.dumps(body or {}).encode(), method="POST",
                                     headers={"Content-Type": content_type})
        try:
            with _OPENER.open(req, timeout=10) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())
