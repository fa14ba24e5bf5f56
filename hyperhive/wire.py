"""The JSON-lines protocol shared by the daemon, the harness, `hive mcp` and the CLI.

One JSON object per line. A request is ``{"id", "op", ...fields}``; a response
is ``{"id", "ok": true, ...}`` or ``{"id", "ok": false, "error": {"code",
"message"}}``. Requests are typed dataclasses (hyperhive.wire_requests,
re-exported here) parsed and checked here, so both sides share one
definition. A bad line gets an error response and the connection stays usable.

Every value of a request is checked before any op sees it (``check_value``):
text must be encodable as UTF-8 (no lone surrogates such as ``"\\ud800"``,
which JSON escapes can carry but sqlite and every writer refuse), containers
nest at most ``MAX_DEPTH`` levels, integers fit in 64 bits and numbers are
finite. ``loads`` applies the same rules to any JSON document (HTTP bodies).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from hyperhive import wire_requests
from hyperhive.errors import BadJson, BadRequest, HiveError, LineTooLong, UnknownOp
from hyperhive.wire_requests import *  # noqa: F403 - every request class, re-exported (see its __all__)
from hyperhive.wire_requests import Request, build

__all__ = [
    "MAX_DEPTH",
    "MAX_LINE",
    "InboxRow",
    "LineSplitter",
    "check_text",
    "check_value",
    "decode_request",
    "encode",
    "encode_request",
    "error_response",
    "loads",
    "ok_response",
]
__all__ += wire_requests.__all__

MAX_LINE = 1 << 20  # 1 MiB, newline excluded
MAX_DEPTH = 32  # nested objects/arrays in one request, the request object included
INT_MIN, INT_MAX = -(1 << 63), (1 << 63) - 1  # what sqlite (and most peers) can hold


@dataclass(frozen=True)
class InboxRow:
    """One message as both sides see it (F3)."""

    id: int
    from_: str
    to: str
    body: str
    sent_at: float
    delivered_at: float | None

    def to_wire(self) -> dict[str, Any]:
        return {
            "id": self.id, "from": self.from_, "to": self.to, "body": self.body,
            "sent_at": self.sent_at, "delivered_at": self.delivered_at,
        }

    @classmethod
    def from_wire(cls, d: dict[str, Any]) -> InboxRow:
        return cls(
            id=int(d["id"]), from_=str(d["from"]), to=str(d["to"]), body=str(d["body"]),
            sent_at=float(d["sent_at"]),
            delivered_at=None if d.get("delivered_at") is None else float(d["delivered_at"]),
        )


# --- decoding -----------------------------------------------------------------

def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


class _Huge:
    """An integer literal too long to be worth converting (it is refused anyway)."""

    __slots__ = ("digits",)

    def __init__(self, digits: int) -> None:
        self.digits = digits


def _parse_int(text: str) -> Any:
    # 20 characters hold every int64 and its sign; longer ones are refused by
    # check_value, so they are never converted (a 4000-digit int costs time).
    return int(text) if len(text) <= 20 else _Huge(len(text))


def _where(path: tuple[Any, ...]) -> str:
    if not path:
        return "the request"
    out = f"field {path[0]!r}"
    for p in path[1:]:
        out += f"[{p!r}]"
    return out


def check_text(value: str, where: str = "the text") -> None:
    """Raise BadRequest unless ``value`` can be encoded as UTF-8.

    A lone surrogate (``"\\ud800"`` in JSON) decodes to a Python str that no
    UTF-8 writer (sqlite, a socket, a file) accepts.
    """
    if value.isascii():
        return
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = ord(value[exc.start])
        raise BadRequest(
            f"{where} is not valid Unicode: a lone surrogate \\u{bad:04x} at character {exc.start} "
            "(text must be encodable as UTF-8; send a surrogate only as half of a pair)"
        ) from None


def check_value(value: Any, max_depth: int = MAX_DEPTH) -> None:
    """Check a decoded JSON value: UTF-8-encodable text (keys too), at most
    ``max_depth`` nested containers, integers within 64 bits, finite numbers.
    Raises BadRequest naming the first offending field."""
    if type(value) is not dict or max_depth < 1:
        _check(value, (), 0, max_depth)
        return
    # The usual request, flat: checked inline (this runs for every request).
    for k, v in value.items():
        if not k.isascii():
            check_text(k, "a field name")
        t = type(v)
        if t is str:
            if not v.isascii():
                check_text(v, f"field {k!r}")
        elif t is int:
            if not INT_MIN <= v <= INT_MAX:
                _check(v, (k,), 1, max_depth)
        elif t is not bool and v is not None:
            _check(v, (k,), 1, max_depth)


def _check(value: Any, path: tuple[Any, ...], depth: int, max_depth: int) -> None:
    if isinstance(value, str):
        check_text(value, _where(path))
    elif isinstance(value, dict):
        if depth >= max_depth:
            raise BadRequest(f"{_where(path)} nests deeper than {max_depth} levels")
        for k, v in value.items():
            check_text(k, f"a field name in {_where(path)}" if path else "a field name")
            _check(v, (*path, k), depth + 1, max_depth)
    elif isinstance(value, list):
        if depth >= max_depth:
            raise BadRequest(f"{_where(path)} nests deeper than {max_depth} levels")
        for i, v in enumerate(value):
            _check(v, (*path, i), depth + 1, max_depth)
    elif isinstance(value, bool) or value is None:
        return
    elif isinstance(value, int):
        if not INT_MIN <= value <= INT_MAX:
            raise BadRequest(f"{_where(path)} is out of range (integers must fit in 64 bits)")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise BadRequest(f"{_where(path)} is not a finite number")
    elif isinstance(value, _Huge):
        raise BadRequest(f"{_where(path)} is out of range: a {value.digits}-character integer "
                         "(integers must fit in 64 bits)")
    else:  # pragma: no cover - json produces nothing else
        raise BadRequest(f"{_where(path)} has an unsupported type {type(value).__name__}")


def _echo_id(req_id: Any) -> Any:
    """The id to put in an error response: only one that can be written back."""
    try:
        check_value(req_id, max_depth=2)
    except BadRequest:
        return None
    return req_id


# One decoder for every request: json.loads(..., parse_constant=…) builds a new one per call.
_DECODER = json.JSONDecoder(parse_constant=_no_constants, parse_int=_parse_int)


def _parse(data: bytes | str) -> Any:
    try:
        text = data.decode("utf-8") if isinstance(data, (bytes, bytearray)) else data
    except UnicodeDecodeError as exc:
        raise BadJson(f"request is not valid JSON: not UTF-8 ({exc})") from None
    try:
        return _DECODER.decode(text)
    except ValueError as exc:
        raise BadJson(f"request is not valid JSON: {exc}") from None
    except RecursionError:
        raise BadRequest(f"request nests deeper than {MAX_DEPTH} levels") from None


def loads(data: bytes | str, max_depth: int = MAX_DEPTH) -> Any:
    """``json.loads`` with the request rules: BadJson for a document that is
    not JSON (or uses NaN/Infinity), BadRequest for lone surrogates, nesting
    over ``max_depth``, integers beyond 64 bits or non-finite numbers."""
    obj = _parse(data)
    check_value(obj, max_depth)
    return obj


def decode_request(line: bytes, ops: frozenset[str]) -> tuple[Any, Request]:
    """Parse one request line into (id, request). Raises HiveError subclasses.

    On error the id is recovered when possible (``err.request_id``) so the
    response can still be matched; an id that could not be written back (a
    lone surrogate, an out-of-range number) is not echoed.
    """
    try:  # _parse, inline: this runs for every request
        obj = _DECODER.decode(line.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise BadJson(f"request is not valid JSON: not UTF-8 ({exc})") from None
    except ValueError as exc:
        raise BadJson(f"request is not valid JSON: {exc}") from None
    except RecursionError:
        raise BadRequest(f"request nests deeper than {MAX_DEPTH} levels") from None
    if not isinstance(obj, dict):
        raise BadJson("request must be a JSON object")
    req_id = obj.get("id")
    try:
        check_value(obj)
    except BadRequest as err:
        err.request_id = _echo_id(req_id)
        raise
    if not isinstance(req_id, (int, str)) or isinstance(req_id, bool):
        raise BadRequest("field 'id' must be an integer or a string", request_id=req_id)
    op = obj.get("op")
    if not isinstance(op, str):
        raise BadRequest("field 'op' must be a string", request_id=req_id)
    if op not in ops:
        raise UnknownOp(f"unknown op {op!r} on this socket; known: {', '.join(sorted(ops))}", request_id=req_id)
    try:
        return req_id, build(op, obj)
    except BadRequest as err:
        err.request_id = req_id
        raise


def encode_request(req_id: Any, req: Request) -> bytes:
    return encode({"id": req_id, "op": req.op, **dataclasses.asdict(req)})


# --- responses ----------------------------------------------------------------

_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))  # one, not one per dumps call
_ASCII_ENCODER = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"))


def encode(obj: dict[str, Any]) -> bytes:
    try:
        return _ENCODER.encode(obj).encode() + b"\n"
    except UnicodeEncodeError:
        # A lone surrogate got into a value (never from a checked request):
        # escaped JSON is still valid UTF-8, where the raw text could not be.
        return _ASCII_ENCODER.encode(obj).encode() + b"\n"


def ok_response(req_id: Any, **fields: Any) -> dict[str, Any]:
    return {"id": req_id, "ok": True, **fields}


def error_response(req_id: Any, err: HiveError) -> dict[str, Any]:
    return {"id": req_id, "ok": False, "error": err.to_wire()}


# --- framing ------------------------------------------------------------------

@dataclass
class LineSplitter:
    """Split a byte stream into lines, turning an over-long line into one error.

    ``feed`` yields each complete line (without the newline) or a LineTooLong
    for a line that passed ``limit``; the rest of that line is skipped, so the
    next line parses normally and the connection stays usable.
    """

    limit: int = MAX_LINE
    _buf: bytearray = field(default_factory=bytearray)
    _skipping: bool = False

    def feed(self, data: bytes) -> Iterator[bytes | LineTooLong]:
        start = 0
        while True:
            nl = data.find(b"\n", start)
            if nl < 0:
                break
            if self._skipping:
                self._skipping = False
            elif len(self._buf) + (nl - start) > self.limit:
                self._buf.clear()
                yield LineTooLong(f"request line over {self.limit} bytes")
            else:
                self._buf += data[start:nl]
                line = bytes(self._buf)
                self._buf.clear()
                if line.strip():
                    yield line
            start = nl + 1
        rest = data[start:]
        if self._skipping:
            return
        if len(self._buf) + len(rest) > self.limit:
            self._buf.clear()
            self._skipping = True
            yield LineTooLong(f"request line over {self.limit} bytes")
        else:
            self._buf += rest
