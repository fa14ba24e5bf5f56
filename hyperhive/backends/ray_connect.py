"""Connecting the daemon to its Ray cluster (``--ray-address``, issue 18), fast or not at all.

``ray.init(address=…)`` on an address where no cluster answers does not fail:
measured here with Ray 2.60 it retried for over two minutes (a dead port, and
a port where something else listens), with no setting of Ray's that bounds
it. So `connect` asks first, each step bounded:

1. the address is resolved as Ray does (``auto``: ``RAY_ADDRESS``, then the
   cluster of the last ``ray start`` on this host; none: fail at once);
2. a TCP connect to it (3 s): refused or unroutable ends here;
3. a subprocess asks the GCS there for its cluster id (10 s; ~0.7 s when it
   answers): something else listening ends here, and the hung attempt dies
   with its process rather than inside the daemon.

Only then ``ray.init``. Any failure is one `RayUnreachable` (a StartupError:
``hive serve`` prints its line and exits 1).
"""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import time

import hyperhive.logs as logs
from hyperhive.errors import StartupError

__all__ = ["NAMESPACE", "RayUnreachable", "connect", "probe"]

_log = logs.get("hyperhive.backend.ray")

NAMESPACE = "hyperhive"
TCP_SECONDS = 3.0
GCS_SECONDS = 10.0
_ASK_GCS = ("import sys\nfrom ray._raylet import GcsClient\n"
            "print(GcsClient(address=sys.argv[1]).cluster_id.hex())\n")


class RayUnreachable(StartupError):
    """``--ray-address`` names no Ray cluster that answers."""


def _resolve(address: str) -> str:
    """host:port (or a ray:// client address) for ``address`` ("auto" included)."""
    if address.startswith("ray://"):
        return address
    from ray._private.services import canonicalize_bootstrap_address_or_die

    try:
        return str(canonicalize_bootstrap_address_or_die(address))
    except (ConnectionError, ValueError) as exc:
        raise RayUnreachable(f"--ray-address {address}: {str(exc).splitlines()[0]}") from None


def _host_port(resolved: str) -> tuple[str, int]:
    hostport = resolved.removeprefix("ray://").split("/", 1)[0]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise RayUnreachable(f"--ray-address {resolved}: not host:port")
    return host.strip("[]"), int(port)


def probe(address: str, tcp_seconds: float = TCP_SECONDS, gcs_seconds: float = GCS_SECONDS) -> str:
    """The resolved address when a Ray cluster answers there; RayUnreachable (one line) otherwise."""
    resolved = _resolve(address)
    host, port = _host_port(resolved)
    try:
        socket.create_connection((host, port), timeout=tcp_seconds).close()
    except OSError as exc:
        raise RayUnreachable(f"cannot reach the Ray cluster at {resolved} (--ray-address {address}): "
                             f"{exc.strerror or exc}") from None
    if resolved.startswith("ray://"):
        return resolved  # a Ray Client server speaks another protocol; ray.init tells
    try:
        r = subprocess.run([sys.executable, "-I", "-c", _ASK_GCS, resolved], capture_output=True, text=True,
                           timeout=gcs_seconds, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise RayUnreachable(f"{resolved} (--ray-address {address}) does not answer as a Ray cluster "
                             f"within {gcs_seconds:g}s") from None
    if r.returncode != 0 or not r.stdout.strip():
        last = (r.stderr.strip().splitlines() or ["no answer"])[-1][:300]
        raise RayUnreachable(f"{resolved} (--ray-address {address}) is not a Ray cluster: {last}")
    return resolved


def connect(address: str) -> bool:
    """Connect this process to the cluster (`probe` first); False when it already was."""
    import ray

    if ray.is_initialized():
        return False
    began = time.monotonic()
    resolved = probe(address)
    try:
        ray.init(address=resolved, namespace=NAMESPACE, log_to_driver=False, logging_level=logging.WARNING,
                 configure_logging=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise RayUnreachable(f"cannot join the Ray cluster at {resolved}: {str(exc).splitlines()[0]}") from None
    _log.info("ray.connected", address=resolved, seconds=round(time.monotonic() - began, 2))
    return True
