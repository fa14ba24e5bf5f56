"""systemd's notify protocol (F39), without libsystemd: a datagram per state.

Only when ``NOTIFY_SOCKET`` is set (a path, or ``@name`` for an abstract
socket). ``READY=1`` goes once the daemon is up; ``WATCHDOG=1`` every half of
``WATCHDOG_USEC`` from an IOLoop PeriodicCallback, so a wedged IOLoop stops
the pings and systemd restarts the service; ``STOPPING=1`` at shutdown.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass

from tornado.ioloop import PeriodicCallback

import hyperhive.logs as logs

__all__ = ["Notifier", "notify_address", "ready", "stopping", "watchdog_interval"]

_log = logs.get("hyperhive.sdnotify")


def notify_address(env: Mapping[str, str]) -> str | bytes | None:
    """The socket address from ``NOTIFY_SOCKET``; abstract names as bytes with a NUL."""
    raw = env.get("NOTIFY_SOCKET", "")
    if raw.startswith("@"):
        return b"\0" + raw[1:].encode()
    if raw.startswith("/"):
        return raw
    return None  # unset, or a kind (vsock:…) we do not speak


def watchdog_interval(env: Mapping[str, str], pid: int) -> float | None:
    """Seconds between WATCHDOG=1 pings (half of WATCHDOG_USEC), or None when not asked."""
    usec = env.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    owner = env.get("WATCHDOG_PID", "")
    if owner and owner != str(pid):
        return None  # the watchdog is meant for another process
    return int(usec) / 2_000_000


@dataclass
class Notifier:
    address: str | bytes
    watchdog: PeriodicCallback | None = None

    def send(self, state: str) -> bool:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
                s.sendto(state.encode(), self.address)
        except OSError as exc:
            _log.warning("sdnotify.send_failed", state=state, error=str(exc))
            return False
        return True


def ready(env: Mapping[str, str] | None = None) -> Notifier | None:
    """Send READY=1 and start the watchdog pings (call on the IOLoop's thread);
    None when systemd is not listening."""
    env = os.environ if env is None else env
    address = notify_address(env)
    if address is None:
        return None
    n = Notifier(address)
    n.send("READY=1")
    interval = watchdog_interval(env, os.getpid())
    if interval is not None:
        def ping() -> None:
            n.send("WATCHDOG=1")

        n.watchdog = PeriodicCallback(ping, interval * 1000)
        n.watchdog.start()
    _log.info("sdnotify.ready", watchdog_seconds=interval)
    return n


def stopping(n: Notifier | None) -> None:
    if n is None:
        return
    if n.watchdog is not None:
        n.watchdog.stop()
    n.send("STOPPING=1")
