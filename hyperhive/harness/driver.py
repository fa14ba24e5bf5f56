"""What the harness asks of a driver: the `Driver` protocol.

A driver turns a batch of inbox messages (and web UI notes) into the agent's
actions, and reports what happens as bus events through ``emit``. The harness
calls it from three places: `loop.run_harness` opens and closes it,
`turns.TurnLoop` runs its turns, compactions and cancels, and the agent's web
UI (`web.AgentUI`) shows its name and whether it needs a login or can compact.
Both drivers (`builtin.BuiltinDriver`, `claude.ClaudeDriver`) implement all of
it, so nobody probes a driver with ``getattr``: a driver without a
conversation says so in ``compact_refusal``, one with no clean cancel of its
own answers False from ``cancel`` (the turn loop then cancels the turn's task).
"""

from __future__ import annotations

from typing import Any, Protocol

from hyperhive.wire import InboxRow

__all__ = ["Driver", "Emit"]


class Emit(Protocol):
    """Publish one bus event: ``emit(kind, **data)`` (`Bus.publish`)."""

    def __call__(self, kind: str, **data: Any) -> object: ...


class Driver(Protocol):
    @property
    def name(self) -> str:
        """The driver's name as agent.json and ``hive harness --driver`` give it."""
        ...

    @property
    def needs_login(self) -> bool:
        """Whether the agent cannot reach its model until someone logs in (the web UI says so)."""
        ...

    @property
    def can_compact(self) -> bool:
        """Whether it keeps a conversation that `/compact` could shorten (the web UI offers it)."""
        ...

    async def open(self) -> None:
        """Get ready for the first turn (before the turn loop starts)."""
        ...

    async def close(self) -> None:
        """End whatever it still runs (after the turn loop ended)."""
        ...

    async def turn(self, messages: list[InboxRow], emit: Emit) -> None:
        """Handle one batch of messages and notes, emitting its events."""
        ...

    def compact_refusal(self) -> str | None:
        """Why `/compact` cannot run now, or None when it can."""
        ...

    async def compact(self, emit: Emit) -> None:
        """Compact the conversation (a turn of its own); Conflict when ``compact_refusal`` says why not."""
        ...

    async def cancel(self) -> bool:
        """End the running turn cleanly; True if one was running and it ended it, False to leave
        the turn to the turn loop (which then cancels its task)."""
        ...
