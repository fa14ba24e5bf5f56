"""What the daemon asks of a backend, whichever runs the containers.

``LocalBackend`` (a sandboxed process tree per agent) and ``NixosBackend``
(a nixos-container per agent) both conform; the ContainerActor, the daemon
and the web surfaces call nothing on a backend beyond this. A capability one
backend lacks is still declared and answers "none" there (the nixos backend
has no cgroup figures and no per-agent host account; the local one has no
container to destroy beyond its cgroup).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, TypeVar

from hyperhive.names import AgentName

if TYPE_CHECKING:
    from hyperhive.sandbox.accounts import Account

__all__ = ["Backend", "ContainerHandle", "ExitCallback", "NoHostResources", "Usage"]

# ``on_exit(returncode, reason)``: the harness ended unasked; reason "out of memory" after an OOM kill.
# returncode None: unknown (a harness adopted from an earlier daemon is not its child).
ExitCallback = Callable[["int | None", "str | None"], None]
# An agent's cgroup figures: memory_bytes, memory_peak_bytes, pids (each None when unknown).
Usage = dict[str, "int | None"]


class ContainerHandle(Protocol):
    """What ``start`` returns: the running container, handed back to ``stop``."""

    @property
    def name(self) -> AgentName: ...

    @property
    def pid(self) -> int | None: ...


H = TypeVar("H", bound=ContainerHandle)


class Backend(Protocol[H]):
    @property
    def kind(self) -> str:
        """"local" or "nixos" (logged at ready)."""
        ...

    @property
    def sandboxed(self) -> bool:
        """Whether agents run isolated (the unsandboxed badge when not)."""
        ...

    def start(self, name: AgentName, driver: str, on_exit: ExitCallback) -> H:
        """Start the agent's harness; ``on_exit`` runs on another thread when it ends unasked."""
        ...

    def adopt(self, name: AgentName, driver: str, on_exit: ExitCallback) -> H | None:
        """At boot: take over the agent's harness if an earlier daemon left it running
        (nothing is started); None when there is none to take (then ``start`` it)."""
        ...

    def release(self, handle: H) -> None:
        """At a daemon stop that keeps the agents (``--keep-agents``): stop watching
        the harness and leave it running for the next daemon to adopt."""
        ...

    def stop(self, handle: H, timeout: float = 5.0) -> int | None:
        """Stop it (``timeout`` <= 0: kill at once); the harness's exit status (None: unknown)."""
        ...

    def destroy(self, name: AgentName) -> None:
        """Remove the container itself (the agent's dirs stay)."""
        ...

    def close(self) -> None:
        """At daemon stop, after every harness."""
        ...

    def usage(self, name: AgentName) -> Usage | None:
        """The agent's cgroup figures; None without a cgroup."""
        ...

    def account(self, name: AgentName) -> Account | None:
        """The agent's own host account; None where the backend has none."""
        ...

    def journal(self, name: AgentName, unit: str, lines: int) -> str:
        """The last ``lines`` lines of the agent's log (``unit``: "harness" or "" for the machine)."""
        ...


class NoHostResources:
    """The part of ``Backend`` a backend without host resources per agent
    answers with "none": no cgroup figures, no host account, nothing of the
    daemon's to remove at its stop (the nixos backend: the container has its own)."""

    def usage(self, name: AgentName) -> Usage | None:
        return None

    def account(self, name: AgentName) -> Account | None:
        return None

    def close(self) -> None:
        return None
