"""Every error hyperhive reports to a caller, each with a stable code.

HiveError                   code             http
├── BadRequest              bad_request      400   missing / wrongly typed field, bad value
│   ├── BadJson             bad_json         400   a line that is not a JSON object
│   ├── LineTooLong         line_too_long    413   a request line over the limit
│   ├── UnknownOp           unknown_op       400   an op this socket does not serve
│   └── BadName             bad_name         400   an agent name outside ^[a-z][a-z0-9-]{0,30}$
├── NotAllowed              not_allowed      403   the sender's config forbids the recipient
├── Forbidden               forbidden        403   the op is not for this caller
├── UnknownAgent            unknown_agent    404   no such agent
├── UnknownId               unknown_id       404   no question / approval with that id
├── Conflict                conflict         409   the agent already exists / wrong state
├── Unavailable             unavailable      503   an actor stopped, no reply in time, or the daemon is shutting down
│   └── StorageUnavailable  storage_unavailable 503 the store cannot commit (disk full, read-only, I/O error)
├── BackendFailed           backend_failed   502   a container command failed (its stderr attached)
├── Internal                internal         500   anything unexpected (logged with its traceback)
└── TransportError          transport_error  503   client side only: the request never got an answer
    ├── ConnectFailed       connect_failed   503   no daemon listening: socket missing, refused, not ours
    ├── ConnectionLost      connection_lost  503   the connection closed before the answer came
    └── TimedOut            timed_out        503   no answer within the client's own timeout

Callers match on the class or on ``code``; the message is for people. The
daemon sends the first fourteen (``to_wire``; the client rebuilds them with
``from_wire``). The transport family is raised by hyperhive.client only and
never crosses a socket, so "the daemon said unavailable" (it answered) stays
apart from "the daemon could not be asked" (as httpx keeps TransportError
apart from the errors a server answered). ``except HiveError`` catches both.

Each class declares its code and status as class keywords; ``__init_subclass__``
records every code (a code used twice is a TypeError at import). A subclass
without ``code=`` shares its parent's and is not recorded.

``request_id``: the id of the request the error answers, when known (the
wire decoder sets it on a refused line, the client on a daemon's answer).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

__all__ = [
    "BackendFailed",
    "BadJson",
    "BadName",
    "BadRequest",
    "BadSetting",
    "BadTokenFile",
    "ConnectFailed",
    "Conflict",
    "ConnectionLost",
    "Forbidden",
    "HiveError",
    "Internal",
    "LineTooLong",
    "NotAllowed",
    "SandboxUnavailable",
    "StartupError",
    "StateDirBusy",
    "StorageUnavailable",
    "TimedOut",
    "TransportError",
    "Unavailable",
    "UnknownAgent",
    "UnknownId",
    "UnknownOp",
    "from_wire",
]

# code → class, every HiveError subclass that declares a code (transport ones too,
# so a code stays unique); ``from_wire`` takes only those with ``on_wire``.
_BY_CODE: dict[str, type[HiveError]] = {}


class HiveError(Exception):
    """Base of every error that crosses a socket or an HTTP response."""

    code: str = "internal"  # an instance may carry another: a code this side does not know
    status: int = 500
    on_wire: ClassVar[bool] = True  # False: raised on the client side, never sent

    def __init_subclass__(cls, *, code: str | None = None, status: int | None = None,
                          on_wire: bool | None = None, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if status is not None:
            cls.status = status
        if on_wire is not None:
            cls.on_wire = on_wire
        if code is None:
            return
        taken = _BY_CODE.get(code)
        if taken is not None:
            raise TypeError(f"error code {code!r} of {cls.__qualname__} is already {taken.__qualname__}'s")
        cls.code = code
        _BY_CODE[code] = cls

    def __init__(self, message: str, *, request_id: object = None) -> None:
        super().__init__(message)
        self.message = message
        self.request_id = request_id

    def to_wire(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


class BadRequest(HiveError, code="bad_request", status=400):
    """The request itself is wrong: a missing or wrongly typed field, a bad value."""


class BadJson(BadRequest, code="bad_json"):
    """A line that is not JSON, or not a JSON object (NaN and Infinity are not JSON)."""


class LineTooLong(BadRequest, code="line_too_long", status=413):
    """A request line over the limit; the rest of the line is skipped and the
    connection stays usable."""


class UnknownOp(BadRequest, code="unknown_op"):
    """An op this socket does not serve (the message lists those it does)."""


class BadName(BadRequest, code="bad_name"):
    """An agent name outside ``^[a-z][a-z0-9-]{0,30}$``."""


class NotAllowed(HiveError, code="not_allowed", status=403):
    """The sender may not message that recipient: its config forbids it, or
    the recipient is itself or ``system``."""


class Forbidden(HiveError, code="forbidden", status=403):
    """The op is not for this caller (e.g. a manager's tool asked for by another agent)."""


class UnknownAgent(HiveError, code="unknown_agent", status=404):
    """No agent by that name."""


class UnknownId(HiveError, code="unknown_id", status=404):
    """No question or approval with that id."""


class Conflict(HiveError, code="conflict", status=409):
    """The agent already exists, or is not in a state the op can act on."""


class Unavailable(HiveError, code="unavailable", status=503):
    """The daemon answered that it cannot serve this now: an actor stopped,
    it had no reply in time, or it is shutting down. Sent by the daemon;
    compare TransportError, where no answer came at all."""


class StorageUnavailable(Unavailable, code="storage_unavailable"):
    """The store cannot commit: the disk is full, the filesystem read-only, or
    an I/O error (the message says which). Nothing was stored; the daemon
    recovers by itself once the storage works again, so a retry may succeed."""


class BackendFailed(HiveError, code="backend_failed", status=502):
    """A container command failed; the message carries its stderr."""


class Internal(HiveError, code="internal", status=500):
    """Anything unexpected; the daemon logs it with its traceback."""


# --- transport: raised by the client, never sent ---------------------------------


class TransportError(HiveError, code="transport_error", status=503, on_wire=False):
    """The request got no answer from the daemon (whether it ran is unknown
    for ConnectionLost and TimedOut)."""


class ConnectFailed(TransportError, code="connect_failed"):
    """Nothing to talk to: the socket is missing, refuses, or cannot be opened."""


class ConnectionLost(TransportError, code="connection_lost"):
    """The connection closed (or broke) before the answer came."""


class TimedOut(TransportError, code="timed_out"):
    """No answer within the client's own timeout."""


def from_wire(error: Mapping[str, object], request_id: object = None) -> HiveError:
    """Rebuild the error a response carried (client side). A code this side
    does not know (or one that is never sent) gives a plain HiveError that
    keeps it."""
    code = error.get("code")
    message = str(error.get("message", ""))
    cls = _BY_CODE.get(code) if isinstance(code, str) else None
    if cls is not None and cls.on_wire:
        return cls(message, request_id=request_id)
    err = HiveError(message, request_id=request_id)
    if isinstance(code, str) and code:
        err.code = code
    return err


# --- startup ------------------------------------------------------------------
# Raised while `hive serve` starts, before anything is served: `serve` prints
# the message as one line and exits with status 1 (never a traceback).


class StartupError(Exception):
    """The daemon cannot start as configured; the message says what to change."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadSetting(StartupError):
    """A setting (flag, environment variable) has a value the daemon cannot use."""


class SandboxUnavailable(StartupError):
    """``--sandbox on`` where bubblewrap cannot run."""


class BadTokenFile(StartupError):
    """The operator token file is missing, unreadable or too short."""


class StateDirBusy(StartupError):
    """Another daemon holds the state dir's lock."""
