"""hyperhive.wire: request decoding, line framing and the inbox row shape."""

from __future__ import annotations

import json
import types
import typing

import pytest

from hyperhive import wire, wire_requests
from hyperhive.errors import BadJson, BadRequest, LineTooLong, UnknownOp
from hyperhive.wire import (
    InboxRow,
    LineSplitter,
    Recent,
    Recv,
    Send,
    Spawn,
    decode_request,
    encode,
    encode_request,
)

# The ops an agent socket serves.
AGENT_OPS = frozenset({"send", "recv", "recent"})


def line(obj: object) -> bytes:
    return json.dumps(obj).encode()


# --- decode_request: valid requests ----------------------------------------------

@pytest.mark.parametrize(
    ("obj", "want_id", "want"),
    [
        ({"id": 1, "op": "send", "to": "bob", "body": "hi"}, 1, Send(to="bob", body="hi")),
        ({"id": "a-7", "op": "send", "to": "operator", "body": ""}, "a-7", Send(to="operator", body="")),
        ({"id": 2, "op": "recv"}, 2, Recv(wait_seconds=None, system=False)),
        ({"id": 3, "op": "recv", "wait_seconds": 5}, 3, Recv(wait_seconds=5, system=False)),
        ({"id": 4, "op": "recv", "wait_seconds": 2.5, "system": True}, 4, Recv(wait_seconds=2.5, system=True)),
        ({"id": 5, "op": "recv", "wait_seconds": None}, 5, Recv(wait_seconds=None)),
        ({"id": 6, "op": "recent"}, 6, Recent(limit=20)),
        ({"id": 7, "op": "recent", "limit": 3}, 7, Recent(limit=3)),
        ({"id": 0, "op": "recent"}, 0, Recent()),
    ],
    ids=[
        "send", "send-str-id", "recv-defaults", "recv-int-wait", "recv-float-wait-system",
        "recv-null-wait", "recent-default", "recent-limit", "zero-id",
    ],
)
def test_decode_valid(obj: dict[str, object], want_id: object, want: object) -> None:
    req_id, req = decode_request(line(obj), AGENT_OPS)
    assert req_id == want_id
    assert req == want
    assert type(req) is type(want)


def test_decode_applies_defaults() -> None:
    _, recv = decode_request(b'{"id":1,"op":"recv"}', AGENT_OPS)
    assert isinstance(recv, Recv)
    assert recv.wait_seconds is None
    assert recv.system is False
    _, recent = decode_request(b'{"id":1,"op":"recent"}', AGENT_OPS)
    assert isinstance(recent, Recent)
    assert recent.limit == 20


def test_decode_list_field() -> None:
    ops = frozenset({"spawn"})
    _, req = decode_request(line({"id": 1, "op": "spawn", "name": "a", "allowed_recipients": ["b", "c"]}), ops)
    assert req == Spawn(name="a", allowed_recipients=["b", "c"])
    _, req = decode_request(line({"id": 1, "op": "spawn", "name": "a"}), ops)
    assert req == Spawn(name="a", allowed_recipients=None)


def test_encode_request_round_trip() -> None:
    for req in (Send(to="b", body="x\ny"), Recv(wait_seconds=1.5, system=True), Recent(limit=4)):
        raw = encode_request(9, req)
        assert raw.endswith(b"\n") and raw.count(b"\n") == 1
        assert decode_request(raw.rstrip(b"\n"), AGENT_OPS) == (9, req)


# --- decode_request: errors --------------------------------------------------------

@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"{",
        b"not json",
        b'{"id": 1, "op": "recv",}',
        b"\xff\xfe\x00",
        b'{"id": 1 "op": "recv"}',
    ],
    ids=["empty", "truncated", "text", "trailing-comma", "bad-utf8", "missing-comma"],
)
def test_decode_malformed_json(raw: bytes) -> None:
    with pytest.raises(BadJson) as exc:
        decode_request(raw, AGENT_OPS)
    assert exc.value.code == "bad_json"
    assert exc.value.to_wire()["code"] == "bad_json"


@pytest.mark.parametrize(
    "raw",
    [b"[]", b'[{"id":1,"op":"recv"}]', b"1", b'"recv"', b"null", b"true"],
    ids=["list", "list-of-request", "number", "string", "null", "bool"],
)
def test_decode_non_object(raw: bytes) -> None:
    with pytest.raises(BadJson) as exc:
        decode_request(raw, AGENT_OPS)
    assert exc.value.code == "bad_json"


@pytest.mark.parametrize(
    ("obj", "want_id", "needle"),
    [
        ({"op": "recv"}, None, "'id'"),
        ({"id": None, "op": "recv"}, None, "'id'"),
        ({"id": True, "op": "recv"}, True, "'id'"),
        ({"id": 1.5, "op": "recv"}, 1.5, "'id'"),
        ({"id": [1], "op": "recv"}, [1], "'id'"),
        ({"id": 1}, 1, "'op'"),
        ({"id": 1, "op": 5}, 1, "'op'"),
        ({"id": 1, "op": None}, 1, "'op'"),
    ],
    ids=["no-id", "null-id", "bool-id", "float-id", "list-id", "no-op", "int-op", "null-op"],
)
def test_decode_missing_or_bad_id_op(obj: dict[str, object], want_id: object, needle: str) -> None:
    with pytest.raises(BadRequest) as exc:
        decode_request(line(obj), AGENT_OPS)
    assert exc.value.code == "bad_request"
    assert needle in exc.value.message
    assert exc.value.request_id == want_id


@pytest.mark.parametrize(
    ("obj", "want_id"),
    [
        ({"id": 11, "op": "launch"}, 11),
        ({"id": "x", "op": "spawn", "name": "a"}, "x"),  # a real op, but not on this socket
        ({"id": 12, "op": ""}, 12),
        ({"id": 13, "op": "SEND", "to": "a", "body": "b"}, 13),
    ],
    ids=["made-up", "admin-op-on-agent-socket", "empty-op", "wrong-case"],
)
def test_decode_unknown_op(obj: dict[str, object], want_id: object) -> None:
    with pytest.raises(UnknownOp) as exc:
        decode_request(line(obj), AGENT_OPS)
    assert exc.value.code == "unknown_op"
    assert exc.value.request_id == want_id
    assert "recent, recv, send" in exc.value.message


@pytest.mark.parametrize(
    ("obj", "needle"),
    [
        ({"id": 1, "op": "send", "body": "hi"}, "needs field 'to'"),
        ({"id": 1, "op": "send", "to": "bob"}, "needs field 'body'"),
        ({"id": 1, "op": "send"}, "needs field 'to'"),
    ],
    ids=["no-to", "no-body", "neither"],
)
def test_decode_missing_field(obj: dict[str, object], needle: str) -> None:
    with pytest.raises(BadRequest) as exc:
        decode_request(line(obj), AGENT_OPS)
    assert exc.value.code == "bad_request"
    assert needle in exc.value.message
    assert exc.value.request_id == 1


@pytest.mark.parametrize(
    ("obj", "field_name"),
    [
        ({"id": 1, "op": "send", "to": 5, "body": "hi"}, "to"),
        ({"id": 1, "op": "send", "to": None, "body": "hi"}, "to"),
        ({"id": 1, "op": "send", "to": ["bob"], "body": "hi"}, "to"),
        ({"id": 1, "op": "send", "to": "bob", "body": {"t": 1}}, "body"),
        ({"id": 1, "op": "recv", "wait_seconds": "x"}, "wait_seconds"),
        ({"id": 1, "op": "recv", "wait_seconds": "5"}, "wait_seconds"),
        ({"id": 1, "op": "recv", "wait_seconds": True}, "wait_seconds"),
        ({"id": 1, "op": "recv", "wait_seconds": [1]}, "wait_seconds"),
        ({"id": 1, "op": "recv", "system": 1}, "system"),
        ({"id": 1, "op": "recv", "system": "true"}, "system"),
        ({"id": 1, "op": "recv", "system": None}, "system"),
        ({"id": 1, "op": "recent", "limit": 1.5}, "limit"),
        ({"id": 1, "op": "recent", "limit": 2.0}, "limit"),
        ({"id": 1, "op": "recent", "limit": True}, "limit"),
        ({"id": 1, "op": "recent", "limit": False}, "limit"),
        ({"id": 1, "op": "recent", "limit": "3"}, "limit"),
        ({"id": 1, "op": "recent", "limit": None}, "limit"),
    ],
    ids=[
        "to-int", "to-null", "to-list", "body-object", "wait-str", "wait-numeric-str", "wait-bool",
        "wait-list", "system-int", "system-str", "system-null", "limit-float", "limit-integral-float",
        "limit-true", "limit-false", "limit-str", "limit-null",
    ],
)
def test_decode_wrong_type(obj: dict[str, object], field_name: str) -> None:
    with pytest.raises(BadRequest) as exc:
        decode_request(line(obj), AGENT_OPS)
    assert exc.value.code == "bad_request"
    assert f"field {field_name!r}" in exc.value.message
    assert exc.value.request_id == 1


@pytest.mark.parametrize(
    ("allowed", "ok"),
    [(["a", "b"], True), ([], True), (None, True), (["a", 1], False), ("a", False), ([None], False)],
    ids=["names", "empty", "null", "mixed", "string", "list-of-null"],
)
def test_decode_list_field_types(allowed: object, ok: bool) -> None:
    raw = line({"id": 1, "op": "spawn", "name": "n", "allowed_recipients": allowed})
    if ok:
        assert decode_request(raw, frozenset({"spawn"}))[1] == Spawn(name="n", allowed_recipients=allowed)  # type: ignore[arg-type]
    else:
        with pytest.raises(BadRequest, match="allowed_recipients"):
            decode_request(raw, frozenset({"spawn"}))


@pytest.mark.parametrize(
    ("obj", "needle"),
    [
        ({"id": 1, "op": "send", "to": "b", "body": "x", "from": "a"}, "from"),
        ({"id": 1, "op": "recv", "timeout": 3}, "timeout"),
        ({"id": 1, "op": "recent", "limit": 2, "offset": 1, "all": True}, "all, offset"),
        ({"id": 1, "op": "recv", "ok": True}, "ok"),
    ],
    ids=["send-from", "recv-timeout", "recent-two-extra", "recv-ok"],
)
def test_decode_extra_fields_refused(obj: dict[str, object], needle: str) -> None:
    with pytest.raises(BadRequest) as exc:
        decode_request(line(obj), AGENT_OPS)
    assert exc.value.code == "bad_request"
    assert f"does not take field(s) {needle}" in exc.value.message
    assert exc.value.request_id == 1


def test_decode_deeply_nested_json_is_refused() -> None:
    raw = b'{"id":1,"op":"recv","x":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    assert len(raw) < 1 << 20  # fits in one request line
    with pytest.raises(BadRequest) as exc:
        decode_request(raw, AGENT_OPS)
    assert exc.value.code == "bad_request"
    assert "deeper than 32" in exc.value.message


# --- LineSplitter ----------------------------------------------------------------

def feed_all(splitter: LineSplitter, chunks: list[bytes]) -> list[bytes | str]:
    """Feed every chunk; lines come back as bytes, errors as their code."""
    out: list[bytes | str] = []
    for chunk in chunks:
        for item in splitter.feed(chunk):
            out.append(item.code if isinstance(item, LineTooLong) else item)
    return out


@pytest.mark.parametrize(
    ("chunks", "want"),
    [
        ([b"abc\n"], [b"abc"]),
        ([b"ab", b"c\n"], [b"abc"]),
        ([b"a", b"b", b"c", b"\n"], [b"abc"]),
        ([b"abc", b"\n", b"def\n"], [b"abc", b"def"]),
        ([b"one\ntwo\nthree\n"], [b"one", b"two", b"three"]),
        ([b"one\ntw", b"o\nthr", b"ee\n"], [b"one", b"two", b"three"]),
        ([b"\n\n\nabc\n\n"], [b"abc"]),
        ([b"  \n\t\nabc\n \r\n"], [b"abc"]),
        ([b"abc"], []),
        ([b"abc\ndef"], [b"abc"]),
        ([b""], []),
        ([b"", b"abc\n", b""], [b"abc"]),
        ([b"x\r\n"], [b"x\r"]),
    ],
    ids=[
        "one-line", "split-in-two", "byte-by-byte", "newline-own-chunk", "three-in-one-chunk",
        "three-across-chunks", "blank-lines", "whitespace-lines", "no-newline-yet", "partial-tail",
        "empty-chunk", "empty-chunks-around", "crlf-kept",
    ],
)
def test_splitter_lines(chunks: list[bytes], want: list[bytes]) -> None:
    assert feed_all(LineSplitter(), chunks) == want


def test_splitter_keeps_partial_until_newline() -> None:
    s = LineSplitter()
    assert feed_all(s, [b'{"id":1,', b'"op":"recv"}']) == []
    assert feed_all(s, [b"\n"]) == [b'{"id":1,"op":"recv"}']


LIMIT = 16
LONG = b"x" * (LIMIT + 1)
AT_LIMIT = b"y" * LIMIT
TOO_LONG = "line_too_long"


@pytest.mark.parametrize(
    ("chunks", "want"),
    [
        # the over-long line ends in the same chunk it started in
        ([LONG + b"\nok\n"], [TOO_LONG, b"ok"]),
        ([b"a\n" + LONG + b"\nok\n"], [b"a", TOO_LONG, b"ok"]),
        ([LONG + b"\n", b"ok\n"], [TOO_LONG, b"ok"]),
        # ... ends in the next chunk
        ([LONG, b"\nok\n"], [TOO_LONG, b"ok"]),
        ([LONG, b"tail\nok\n"], [TOO_LONG, b"ok"]),
        # ... ends many chunks later
        ([LONG] + [b"x" * LIMIT] * 10 + [b"x\nok\n"], [TOO_LONG, b"ok"]),
        ([LONG] + [b"x"] * 50 + [b"\n", b"ok\n"], [TOO_LONG, b"ok"]),
        # ... crosses the limit only after a few small chunks
        ([b"x" * 10, b"x" * 5, b"x" * 5, b"x\nok\n"], [TOO_LONG, b"ok"]),
        ([b"x" * LIMIT, b"x", b"\nok\n"], [TOO_LONG, b"ok"]),
        ([b"x" * LIMIT, b"x\nok\n"], [TOO_LONG, b"ok"]),
        # two over-long lines in a row, each its own error
        ([LONG + b"\n" + LONG + b"\nok\n"], [TOO_LONG, TOO_LONG, b"ok"]),
        ([LONG, b"\n", LONG, b"\n", b"ok\n"], [TOO_LONG, TOO_LONG, b"ok"]),
        # the following line itself arrives in pieces
        ([LONG + b"\no", b"k\n"], [TOO_LONG, b"ok"]),
        ([LONG, b"x\no", b"k", b"\n"], [TOO_LONG, b"ok"]),
        # exactly at the limit is fine, however it arrives
        ([AT_LIMIT + b"\n"], [AT_LIMIT]),
        ([AT_LIMIT, b"\n"], [AT_LIMIT]),
        ([AT_LIMIT[:7], AT_LIMIT[7:], b"\nok\n"], [AT_LIMIT, b"ok"]),
        ([AT_LIMIT + b"\n" + AT_LIMIT + b"\n"], [AT_LIMIT, AT_LIMIT]),
    ],
    ids=[
        "same-chunk", "same-chunk-after-good-line", "same-chunk-next-line-next-chunk",
        "newline-next-chunk", "tail-next-chunk", "many-full-chunks-later", "many-tiny-chunks-later",
        "crosses-limit-late", "limit-then-one-byte", "limit-then-one-byte-and-newline",
        "two-in-one-chunk", "two-across-chunks", "next-line-split", "next-line-split-after-skip",
        "at-limit", "at-limit-newline-next-chunk", "at-limit-split", "two-at-limit",
    ],
)
def test_splitter_line_too_long(chunks: list[bytes], want: list[bytes | str]) -> None:
    assert feed_all(LineSplitter(limit=LIMIT), chunks) == want


def test_splitter_error_is_line_too_long() -> None:
    (err,) = LineSplitter(limit=4).feed(b"12345\n")
    assert isinstance(err, LineTooLong)
    assert err.code == "line_too_long"
    assert err.status == 413
    assert "4 bytes" in err.message


def test_splitter_over_long_then_valid_request_decodes() -> None:
    s = LineSplitter(limit=64)
    good = b'{"id":2,"op":"recv","wait_seconds":0}'
    out = feed_all(s, [b'{"id":1,"op":"send","to":"a","body":"' + b"z" * 100, b"z" * 100, b'"}\n' + good + b"\n"])
    assert out == [TOO_LONG, good]
    assert decode_request(out[1], AGENT_OPS) == (2, Recv(wait_seconds=0))  # type: ignore[arg-type]


def test_splitter_default_limit_is_one_mib() -> None:
    s = LineSplitter()
    assert s.limit == 1 << 20
    at = b"a" * (1 << 20)
    assert feed_all(s, [at[: 1 << 19], at[1 << 19 :], b"\n"]) == [at]
    assert feed_all(s, [at, b"a\nok\n"]) == [TOO_LONG, b"ok"]


# --- InboxRow ----------------------------------------------------------------------

@pytest.mark.parametrize(
    "row",
    [
        InboxRow(1, "alice", "bob", "hello", 1700000000.25, None),
        InboxRow(2, "operator", "m1nd", "", 0.0, 1700000001.5),
        InboxRow(3, "a", "operator", "multi\nline \u00e9 \u2603", 1.0, 2.0),
    ],
    ids=["undelivered", "delivered", "unicode-body"],
)
def test_inbox_row_round_trip(row: InboxRow) -> None:
    wire = row.to_wire()
    assert set(wire) == {"id", "from", "to", "body", "sent_at", "delivered_at"}
    assert "from_" not in wire
    assert wire["from"] == row.from_
    assert InboxRow.from_wire(wire) == row
    # and through actual JSON
    assert InboxRow.from_wire(json.loads(encode(wire))) == row


def test_inbox_row_from_wire_missing_delivered_at() -> None:
    row = InboxRow.from_wire({"id": "4", "from": "a", "to": "b", "body": "x", "sent_at": 3})
    assert row == InboxRow(4, "a", "b", "x", 3.0, None)
    assert isinstance(row.sent_at, float)


# --- every value is checked: text, depth, numbers --------------------------------

ALL_OPS = frozenset(wire_requests.OPS)
SURROGATES = ["\ud800", "\udfff", "\udc00", "a\ud83d", "\ude00b", "ok \udbff then more"]


def _sample(tp: object) -> object:
    """A valid value of a wire field type."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return _sample(next(a for a in typing.get_args(tp) if a is not type(None)))
    if origin is list:
        return [_sample(typing.get_args(tp)[0])]
    return {str: "x", int: 1, float: 1.0, bool: True}[tp]  # type: ignore[index]


def _with_text(tp: object, text: str) -> object | None:
    """``text`` where the field type holds text (a str, or inside a list of str); None if it holds none."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for a in typing.get_args(tp):
            v = _with_text(a, text)
            if v is not None:
                return v
        return None
    if origin is list:
        inner = _with_text(typing.get_args(tp)[0], text)
        return None if inner is None else ["fine", inner]
    return text if tp is str else None


def _text_fields() -> list[tuple[str, str, object]]:
    out = []
    for op in sorted(ALL_OPS):
        fields, _ = wire_requests.schema(op)
        for name, tp, _required, _check in fields:
            if _with_text(tp, "x") is not None:
                out.append((op, name, tp))
    return out


def _valid(op: str) -> dict[str, object]:
    fields, _ = wire_requests.schema(op)
    return {"id": 7, "op": op, **{name: _sample(tp) for name, tp, required, _check in fields if required}}


def test_every_op_has_a_valid_sample() -> None:
    for op in ALL_OPS:
        assert decode_request(line(_valid(op)), ALL_OPS)[1].op == op


@pytest.mark.parametrize(("op", "name", "tp"), _text_fields(), ids=[f"{o}.{n}" for o, n, _ in _text_fields()])
@pytest.mark.parametrize("bad", SURROGATES, ids=[ascii(b) for b in SURROGATES])
def test_a_lone_surrogate_in_any_text_field_is_refused(op: str, name: str, tp: object, bad: str) -> None:
    obj = {**_valid(op), name: _with_text(tp, bad)}
    raw = line(obj)  # json.dumps escapes it: \ud800 — valid JSON, invalid text
    assert b"\\u" in raw
    with pytest.raises(BadRequest) as exc:
        decode_request(raw, ALL_OPS)
    err = exc.value
    assert err.code == "bad_request"
    assert f"field {name!r}" in err.message and "lone surrogate" in err.message
    assert err.request_id == 7
    # the error itself can be written back
    encode(wire.error_response(7, err)).decode("utf-8")


def test_the_check_covers_every_text_field_of_every_op() -> None:
    fields = {(op, name) for op, name, _ in _text_fields()}
    assert ("send", "body") in fields and ("send", "to") in fields
    assert ("spawn", "allowed_recipients") in fields and ("ask_operator", "options") in fields
    assert ("propose_config", "agent_json") in fields and ("heartbeat", "state") in fields
    assert len(fields) >= 25


@pytest.mark.parametrize(
    ("obj", "needle", "want_id"),
    [
        ({"id": "\ud800", "op": "recv"}, "field 'id'", None),
        ({"id": ["\ud800"], "op": "recv"}, "field 'id'[0]", None),
        ({"id": 3, "op": "se\udcffnd", "to": "b", "body": "x"}, "field 'op'", 3),
        ({"id": 3, "op": "send", "to": "b", "body": "x", "\ud800": 1}, "a field name", 3),
        ({"id": 3, "op": "send", "to": "b", "body": "x", "extra": {"k": ["ok", "\ud800"]}}, "field 'extra'['k'][1]", 3),
        ({"id": 3, "op": "send", "to": "b", "body": "x", "extra": {"\udc00": 1}}, "a field name in field 'extra'", 3),
        ({"id": 3, "op": "fly", "x": "\ud800"}, "field 'x'", 3),  # checked before the op is known
    ],
    ids=["id", "id-in-list", "op", "key", "nested-value", "nested-key", "unknown-op"],
)
def test_lone_surrogates_anywhere_are_refused(obj: dict[str, object], needle: str, want_id: object) -> None:
    with pytest.raises(BadRequest) as exc:
        decode_request(line(obj), ALL_OPS)
    assert exc.value.code == "bad_request"
    assert needle in exc.value.message
    assert exc.value.request_id == want_id
    encode(wire.error_response(exc.value.request_id, exc.value)).decode("utf-8")


@pytest.mark.parametrize(
    "body",
    ["\U0001f600", "caf\u00e9 \u2603", "\U0010ffff", "\x00 nul is text", "\ufffd", "plain"],
    ids=["pair", "bmp", "max-code-point", "nul", "replacement-char", "ascii"],
)
def test_valid_text_passes(body: str) -> None:
    for raw in (line({"id": 1, "op": "send", "to": "b", "body": body}),
                json.dumps({"id": 1, "op": "send", "to": "b", "body": body}, ensure_ascii=False).encode()):
        assert decode_request(raw, AGENT_OPS) == (1, Send(to="b", body=body))


def test_an_escaped_surrogate_pair_is_one_character() -> None:
    raw = b'{"id": 1, "op": "send", "to": "b", "body": "\\ud83d\\ude00"}'
    assert decode_request(raw, AGENT_OPS) == (1, Send(to="b", body="\U0001f600"))


def _nest(depth: int) -> object:
    """``depth`` nested containers, alternating lists and objects."""
    v: object = 1
    for i in range(depth):
        v = [v] if i % 2 else {"k": v}
    return v


@pytest.mark.parametrize(("inner", "ok"), [(30, True), (31, True), (32, False), (33, False), (900, False)])
def test_nesting_is_capped_at_32_levels(inner: int, ok: bool) -> None:
    # the request object is a level: 31 inside it make 32
    obj = {"id": 5, "op": "send", "to": "b", "body": "x", "extra": _nest(inner)}
    with pytest.raises(BadRequest) as exc:
        decode_request(line(obj), AGENT_OPS)
    if ok:  # past the depth check: refused only for the unknown field
        assert "does not take field(s) extra" in exc.value.message
    else:
        assert exc.value.code == "bad_request" and "deeper than 32 levels" in exc.value.message
        assert exc.value.request_id == 5


def test_nesting_in_a_known_field() -> None:
    ops = frozenset({"spawn"})
    raw = line({"id": 1, "op": "spawn", "name": "n", "allowed_recipients": _nest(40)})
    with pytest.raises(BadRequest, match="deeper than 32"):
        decode_request(raw, ops)


@pytest.mark.parametrize(
    ("raw", "needle", "want_id"),
    [
        (b'{"id": 9223372036854775808, "op": "recv"}', "field 'id' is out of range", None),
        (b'{"id": -9223372036854775809, "op": "recv"}', "field 'id' is out of range", None),
        (b'{"id": 1, "op": "recent", "limit": 100000000000000000000}', "field 'limit' is out of range", 1),
        (b'{"id": 1, "op": "recent", "limit": ' + b"9" * 5000 + b"}", "5000-character integer", 1),
        (b'{"id": ' + b"1" * 100_000 + b', "op": "recv"}', "100000-character integer", None),
        (b'{"id": 1, "op": "recv", "wait_seconds": 1e400}', "field 'wait_seconds' is not a finite number", 1),
        (b'{"id": 1, "op": "recv", "wait_seconds": -1e400}', "not a finite number", 1),
        (b'{"id": 1, "op": "recv", "x": [1e999]}', "field 'x'[0] is not a finite number", 1),
    ],
    ids=["id-2^63", "id-below-int64", "limit-1e20", "limit-5000-digits", "id-100k-digits",
         "wait-1e400", "wait-minus-1e400", "nested-inf"],
)
def test_huge_numbers_are_refused(raw: bytes, needle: str, want_id: object) -> None:
    with pytest.raises(BadRequest) as exc:
        decode_request(raw, ALL_OPS)
    assert exc.value.code == "bad_request"
    assert needle in exc.value.message
    assert exc.value.request_id == want_id


def test_numbers_at_the_edges_pass() -> None:
    top = (1 << 63) - 1
    assert decode_request(line({"id": top, "op": "recent", "limit": top}), AGENT_OPS) == (top, Recent(limit=top))
    assert decode_request(line({"id": -(1 << 63), "op": "recv", "wait_seconds": 1e308}), AGENT_OPS) == (
        -(1 << 63), Recv(wait_seconds=1e308))
    assert decode_request(b'{"id": 1, "op": "recv", "wait_seconds": 2.5e-300}', AGENT_OPS)[1] == Recv(2.5e-300)


@pytest.mark.parametrize("const", [b"NaN", b"Infinity", b"-Infinity"])
def test_nan_and_infinity_are_not_json(const: bytes) -> None:
    with pytest.raises(BadJson, match="not allowed"):
        decode_request(b'{"id": 1, "op": "recv", "wait_seconds": ' + const + b"}", AGENT_OPS)
    with pytest.raises(BadJson):
        wire.loads(b'{"x": [' + const + b"]}")


def test_loads_applies_the_request_rules() -> None:
    assert wire.loads(b'{"body": "caf\\u00e9", "n": [1, 2.5, null, true]}') == {
        "body": "caf\u00e9", "n": [1, 2.5, None, True]}
    assert wire.loads('"text"') == "text"
    for bad, code in [(b'{"body": "\\ud800"}', "bad_request"), (b"[" * 40 + b"]" * 40, "bad_request"),
                      (b'{"n": 1e400}', "bad_request"), (b'{"n": ' + b"7" * 30 + b"}", "bad_request"),
                      (b"{", "bad_json"), (b"\xff", "bad_json")]:
        with pytest.raises(BadRequest) as exc:
            wire.loads(bad)
        assert exc.value.code == code, bad
    assert wire.loads(b"[" * 40 + b"]" * 40, max_depth=64) is not None


def test_check_text() -> None:
    wire.check_text("fine \u00e9 \U0001f600")
    with pytest.raises(BadRequest, match=r"the body is not valid Unicode: a lone surrogate \\ud800 at character 2"):
        wire.check_text("ab\ud800", "the body")


def test_encode_never_fails_on_a_lone_surrogate() -> None:
    out = encode({"id": 1, "ok": False, "error": {"code": "x", "message": "bad \ud800 here"}})
    assert out.endswith(b"\n")
    assert json.loads(out.decode("utf-8"))["error"]["message"] == "bad \ud800 here"
    assert encode({"a": "\u00e9"}) == '{"a":"\u00e9"}\n'.encode()  # the usual path stays raw UTF-8


# --- request_id and the request registry ---------------------------------------------

@pytest.mark.parametrize(
    "raw", [b"{", b"\xff", b"[1]", b'"id"'], ids=["not-json", "not-utf8", "list", "string"],
)
def test_a_line_with_no_readable_id_has_request_id_none(raw: bytes) -> None:
    with pytest.raises(BadJson) as exc:
        decode_request(raw, AGENT_OPS)
    assert exc.value.request_id is None
    (too_long,) = LineSplitter(limit=2).feed(b"abc\n")
    assert isinstance(too_long, LineTooLong) and too_long.request_id is None


def test_every_op_round_trips_through_encode_request() -> None:
    for op in ALL_OPS:
        _, req = decode_request(line(_valid(op)), ALL_OPS)
        assert decode_request(encode_request("r", req).rstrip(b"\n"), ALL_OPS) == ("r", req)


def test_an_op_declared_twice_is_refused() -> None:
    with pytest.raises(TypeError, match=r"op 'send' of .*Again is already Send's"):
        class Again(wire.Request, op="send"):
            pass
    assert wire_requests.OPS["send"] is Send
