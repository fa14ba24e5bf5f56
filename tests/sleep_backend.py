"""A backend whose containers are real ``sleep`` processes (no harness, no
sandbox), for the actors' in-process tests: it conforms to
``hyperhive.backends.base.Backend`` and, like the real backends, reports an
exit nobody asked for through ``on_exit``."""

from __future__ import annotations

import subprocess
import threading
from dataclasses import dataclass, field

from hyperhive.backends.base import ExitCallback, Usage
from hyperhive.names import AgentName

__all__ = ["NoSockets", "SleepBackend", "Sleeper"]


@dataclass
class Sleeper:
    name: AgentName
    proc: subprocess.Popen[bytes]
    asked: threading.Event = field(default_factory=threading.Event)
    watcher: threading.Thread | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid


class SleepBackend:
    kind = "local"
    sandboxed = False

    def __init__(self) -> None:
        self.started: list[str] = []
        self.destroyed: list[str] = []

    def start(self, name: AgentName, driver: str, on_exit: ExitCallback) -> Sleeper:
        h = Sleeper(name, subprocess.Popen(["sleep", "300"]))

        def watch() -> None:
            rc = h.proc.wait()
            if not h.asked.is_set():
                on_exit(rc, None)

        h.watcher = threading.Thread(target=watch, daemon=True)
        h.watcher.start()
        self.started.append(name)
        return h

    def adopt(self, name: AgentName, driver: str, on_exit: ExitCallback) -> Sleeper | None:
        return None  # a sleeper never outlives its test

    def release(self, handle: Sleeper) -> None:
        handle.asked.set()

    def stop(self, handle: Sleeper, timeout: float = 5.0) -> int:
        handle.asked.set()
        handle.proc.terminate() if timeout > 0 else handle.proc.kill()
        rc = handle.proc.wait()
        if handle.watcher is not None:
            handle.watcher.join(5)
        return rc

    def destroy(self, name: AgentName) -> None:
        self.destroyed.append(name)

    def close(self) -> None:
        pass

    def usage(self, name: AgentName) -> Usage | None:
        return None

    def account(self, name: AgentName) -> None:
        return None

    def journal(self, name: AgentName, unit: str, lines: int) -> str:
        return ""


class NoSockets:
    """The Coordinator's socket binder, binding nothing (the tests call the actors directly)."""

    def open(self, name: AgentName, manager: bool) -> None:
        pass

    def close(self, name: AgentName) -> None:
        pass
