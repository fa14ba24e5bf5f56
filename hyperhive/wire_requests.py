"""The requests of the JSON-lines protocol, one frozen dataclass per op.

A request class names its op as a class keyword and declares its fields; the
field types are the wire's rules (``str``, ``int``, ``float``, ``bool``,
``list[...]``, ``X | None``) and a default makes a field optional::

    class Recent(Request, op="recent"):
        limit: int = 20

``Request.__init_subclass__`` makes the class a frozen dataclass and records
it by op (an op declared twice is a TypeError at import); ``build`` turns a
decoded, already value-checked JSON object into the request, refusing a
missing field, a wrongly typed one or one the op does not take. hyperhive.wire
re-exports every request class.
"""

from __future__ import annotations

import dataclasses
import functools
import secrets
import time
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Union, dataclass_transform

from hyperhive.errors import BadRequest

__all__ = [
    "OPS",
    "Answer",
    "Approvals",
    "Approve",
    "AskOperator",
    "ByName",
    "CancelQuestion",
    "Deny",
    "Destroy",
    "Grants",
    "Heartbeat",
    "Inbox",
    "Journal",
    "Kill",
    "Ls",
    "Permission",
    "Ping",
    "ProposeConfig",
    "Pull",
    "Purge",
    "Questions",
    "Rebuild",
    "Recent",
    "Recv",
    "Request",
    "RequestApplyCommit",
    "RequestSpawn",
    "Restart",
    "Revive",
    "RevokeTool",
    "Send",
    "Spawn",
    "Start",
    "Stop",
    "Tombstones",
    "TurnDone",
    "TurnSlot",
    "Usage",
    "build",
    "new_idempotency_key",
    "schema",
]

OPS: dict[str, type[Request]] = {}  # op name → its request class


@dataclass_transform(frozen_default=True, field_specifiers=(field,))
class Request:
    """Base of every request: ``class X(Request, op="x")`` declares op "x".
    A subclass without ``op=`` is a shared base (``ByName``), not an op."""

    op: ClassVar[str]
    __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]  # set by dataclass()

    def __init_subclass__(cls, *, op: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        dataclass(frozen=True)(cls)
        if op is None:
            return
        if op in OPS:
            raise TypeError(f"op {op!r} of {cls.__qualname__} is already {OPS[op].__qualname__}'s")
        cls.op = op
        OPS[op] = cls


class ByName(Request):
    """An op on one agent, named by the caller."""

    name: str


# --- messaging and the agent socket ---------------------------------------------

class Send(Request, op="send"):
    """On an agent's socket and (as the operator) on the admin socket.
    ``idempotency_key`` (issue 16): 1..128 printable ASCII characters naming
    the send; a retry with the same key from the same sender stores nothing and
    is answered with the original ``message_id`` and ``duplicate: true``."""

    to: str
    body: str
    idempotency_key: str | None = None


def new_idempotency_key(prefix: str) -> str:
    """A fresh key for one send (``hive mcp``: per tool call, ``hive send``: per
    invocation): the time first, so each sender's keys grow and the unique index
    takes them at its end (random keys cost a page write each), then 64 random
    bits."""
    return f"{prefix}-{time.time_ns():016x}-{secrets.token_hex(8)}"


class Recv(Request, op="recv"):
    wait_seconds: float | None = None
    # The harness's own turn-loop recv: served after any tool-level recv parked
    # on the same agent, so a model's explicit recv is never starved by it.
    system: bool = False


class Recent(Request, op="recent"):
    limit: int = 20


class Inbox(Request, op="inbox"):
    limit: int = 50


class TurnSlot(Request, op="turn_slot"):
    kind: str = "turn"  # turn | compact (F44)


class Heartbeat(Request, op="heartbeat"):
    state: str  # idle | thinking | compacting (F41)


class Ping(Request, op="ping"): ...
class TurnDone(Request, op="turn_done"):
    cost_usd: float | None = None  # the CLI's own total_cost_usd for the turn: a cross-check (issue 15)


class Permission(Request, op="permission"):
    """The CLI asks whether a tool call may run ("permissions": "ask", issue 14);
    parks until the operator decides. ``input_json``: the tool's input object."""

    tool_name: str
    input_json: str
    tool_use_id: str = ""


class Grants(Request, op="grants"):
    """The tools an agent was granted "from now on". On an agent's socket: its
    own (no name); on the admin socket: the named agent's (``name`` required)."""

    name: str | None = None


class RevokeTool(ByName, op="revoke_tool"):
    """The operator takes back a tool granted "from now on" (admin socket)."""

    tool: str


# --- lifecycle (admin socket; start/restart/kill also the manager's) ------------

class Spawn(ByName, op="spawn"):
    # Initial config; None lets the agent message anyone.
    allowed_recipients: list[str] | None = None
    repo: str | None = None  # the operator's repository the agent gets a clone of (issue 14)
    permissions: str | None = None  # sandbox | ask | allowlist (issue 14)
    budget_usd: float | None = None  # its budget (issue 15), per budget_per (default day)
    budget_per: str | None = None
    # Where it may run (issue 18, the ray backend): the flags as typed, parsed by placement.py.
    cpus: str | None = None
    memory_mb: str | None = None
    resources: str | None = None


class Pull(ByName, op="pull"):
    """Fetch the agent's branch hive/<name> into the operator's repository now."""


class Destroy(ByName, op="destroy"):
    purge: bool = False
    force: bool = False  # purge even what the operator's repo does not keep (issue 14)


class Purge(ByName, op="purge"):
    force: bool = False  # likewise


class Journal(ByName, op="journal"):
    """A container's log (F23): unit "harness" or "" (the whole machine)."""

    unit: str = "harness"
    lines: int = 200


# The verbs that take only the agent's name, and the listings that take nothing.
class Start(ByName, op="start"): ...
class Stop(ByName, op="stop"): ...
class Restart(ByName, op="restart"): ...
class Rebuild(ByName, op="rebuild"): ...
class Kill(ByName, op="kill"): ...
class Revive(ByName, op="revive"): ...
class Ls(Request, op="ls"): ...
class Tombstones(Request, op="tombstones"): ...


# --- the operator's gate (F7–F13) -----------------------------------------------

class AskOperator(Request, op="ask_operator"):
    question: str
    options: list[str] = field(default_factory=list)
    multi: bool = False
    ttl_seconds: float | None = None
    default: str | None = None


class RequestSpawn(ByName, op="request_spawn"):
    allowed_recipients: list[str] | None = None
    driver: str | None = None
    prompt: str | None = None
    repo: str | None = None
    # Where it may run (issue 18): as agent.json's placement, resources an object name → number.
    cpus: float | None = None
    memory_mb: int | None = None
    resources: dict[str, float] | None = None


class RequestApplyCommit(Request, op="request_apply_commit"):
    agent: str
    commit: str


class ProposeConfig(Request, op="propose_config"):
    agent: str
    message: str
    prompt: str | None = None
    agent_json: str | None = None


class Answer(Request, op="answer"):
    question_id: int
    chosen: list[str] = field(default_factory=list)
    text: str = ""


class CancelQuestion(Request, op="cancel_question"):
    question_id: int


class Approve(Request, op="approve"):
    approval_id: int


class Deny(Request, op="deny"):
    approval_id: int
    reason: str | None = None


class Questions(Request, op="questions"): ...
class Approvals(Request, op="approvals"): ...


class Usage(Request, op="usage"):
    """Tokens, cost, calls and turns per agent and for the fleet (issue 15): the
    admin socket's and the manager's. ``since``: "all", or N followed by h or d."""

    since: str = "24h"


# --- building a request from its JSON object -------------------------------------

Check = Callable[[Any], bool]
Field = tuple[str, Any, bool, Check]  # name, type, required, the type's check


@functools.cache
def schema(op: str) -> tuple[tuple[Field, ...], frozenset[str]]:
    """An op's (name, type, required, check) fields and the keys its request may hold.

    Cached: ``get_type_hints`` and reading a type cost more than the rest of a decode.
    """
    cls = OPS[op]
    hints = typing.get_type_hints(cls)
    fields = tuple(
        (f.name, hints[f.name], f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING,
         type_check(hints[f.name]))
        for f in dataclasses.fields(cls)
    )
    return fields, frozenset({"id", "op", *(f[0] for f in fields)})


def build(op: str, obj: dict[str, Any]) -> Request:
    """The request of ``op`` from its checked JSON object; BadRequest for a
    missing, wrongly typed or unexpected field."""
    fields, names = schema(op)
    kwargs: dict[str, Any] = {}
    for name, tp, required, ok in fields:
        if name not in obj:
            if required:
                raise BadRequest(f"op {op!r} needs field {name!r}")
            continue
        if not ok(obj[name]):
            raise BadRequest(f"field {name!r} of op {op!r} must be {_type_name(tp)}, got {type(obj[name]).__name__}")
        kwargs[name] = obj[name]
    if len(obj) != len(kwargs) + ("id" in obj) + ("op" in obj) and (extra := set(obj) - names):
        raise BadRequest(f"op {op!r} does not take field(s) {', '.join(sorted(extra))}")
    return OPS[op](**kwargs)


def type_check(tp: Any) -> Check:
    """The check of a wire type, made once: a JSON value is of ``tp`` (a bool is
    no number; an int is a float)."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        checks = tuple(type_check(arg) for arg in typing.get_args(tp))
        return lambda v: any(c(v) for c in checks)
    if tp is type(None):
        return lambda v: v is None
    if tp is bool:
        return lambda v: isinstance(v, bool)
    if tp is int:
        return lambda v: isinstance(v, int) and not isinstance(v, bool)
    if tp is float:
        return lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
    if tp is str:
        return lambda v: isinstance(v, str)
    if origin is dict:
        key, value = (type_check(arg) for arg in typing.get_args(tp))
        return lambda v: isinstance(v, dict) and all(key(k) and value(x) for k, x in v.items())
    if origin is list:
        (item,) = typing.get_args(tp)
        each = type_check(item)
        return lambda v: isinstance(v, list) and all(each(x) for x in v)
    raise TypeError(f"unsupported wire type {tp!r}")


def _type_name(tp: Any) -> str:
    return str(tp).replace("typing.", "").replace("<class '", "").replace("'>", "")
