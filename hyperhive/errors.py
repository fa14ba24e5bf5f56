"""Every error hyperhive reports to a caller, each with a stable wire code.

HiveError                 code            http
├── BadRequest            bad_request     400   missing / wrongly typed field, bad value
│   ├── BadJson           bad_json        400   a line that is not a JSON object
│   ├── LineTooLong       line_too_long   413   a request line over the limit
│   ├── UnknownOp         unknown_op      400   an op this socket does not serve
│   └── BadName           bad_name        400   an agent name outside ^[a-z][a-z0-9-]{0,30}$
├── NotAllowed            not_allowed     403   the sender's config forbids the recipient
├── Forbidden             forbidden       403   the op is not for this caller
├── UnknownAgent          unknown_agent   404   no such agent
├── UnknownId             unknown_id      404   no question / approval with that id
├── Conflict              conflict        409   the agent already exists / wrong state
├── Unavailable           unavailable     503   an actor stopped or the daemon is shutting down
├── BackendFailed         backend_failed  502   a container command failed (its stderr attached)
└── Internal              internal        500   anything unexpected (logged with its traceback)

Callers match on ``code``; the message is for people.
"""

from __future__ import annotations

__all__ = [
    "BackendFailed",
    "BadJson",
    "BadName",
    "BadRequest",
    "BadSetting",
    "BadTokenFile",
    "Conflict",
    "Forbidden",
    "HiveError",
    "Internal",
    "LineTooLong",
    "NotAllowed",
    "SandboxUnavailable",
    "StartupError",
    "StateDirBusy",
    "Unavailable",
    "UnknownAgent",
    "UnknownId",
    "UnknownOp",
]


class HiveError(Exception):
    """Base of every error that crosses a socket or an HTTP response."""

    code = "internal"
    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_wire(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


class BadRequest(HiveError):
    code = "bad_request"
    status = 400


class BadJson(BadRequest):
    code = "bad_json"


class LineTooLong(BadRequest):
    code = "line_too_long"
    status = 413


class UnknownOp(BadRequest):
    code = "unknown_op"


class BadName(BadRequest):
    code = "bad_name"


class NotAllowed(HiveError):
    code = "not_allowed"
    status = 403


class Forbidden(HiveError):
    code = "forbidden"
    status = 403


class UnknownAgent(HiveError):
    code = "unknown_agent"
    status = 404


class UnknownId(HiveError):
    code = "unknown_id"
    status = 404


class Conflict(HiveError):
    code = "conflict"
    status = 409


class Unavailable(HiveError):
    code = "unavailable"
    status = 503


class BackendFailed(HiveError):
    code = "backend_failed"
    status = 502


class Internal(HiveError):
    code = "internal"
    status = 500


_BY_CODE: dict[str, type[HiveError]] = {
    cls.code: cls
    for cls in (
        BadRequest, BadJson, LineTooLong, UnknownOp, BadName, NotAllowed,
        Forbidden, UnknownAgent, UnknownId, Conflict, Unavailable, BackendFailed, Internal,
    )
}


def from_wire(error: dict[str, object]) -> HiveError:
    """Rebuild the error a response carried (client side)."""
    cls = _BY_CODE.get(str(error.get("code")), HiveError)
    return cls(str(error.get("message", "")))


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
