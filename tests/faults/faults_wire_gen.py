"""Wire fuzzing (issue 16, the fault suite): the lines for an agent's JSON-lines socket.

Values come from hypothesis strategies, one per wire type of the requests'
fields (text, NUL and control characters and lone surrogates among it;
integers, out of 64 bits too; floats, NaN and infinities too), any JSON value
for a wrongly typed field, and raw bytes. `Pools` draws them (hypothesis's
generate phase only, no database, a fixed seed); `Mixer` builds each line from
them with a seeded `random.Random`: an op of `hyperhive.wire_requests.OPS`
(now and then an unknown one, or none), each of its declared fields of its
type, of another or left out, fields it does not take, a missing or odd id;
then the rendering breaks what a peer can break: lone surrogates as ``\\udXXX``
escapes and raw (invalid UTF-8), NUL, invalid UTF-8 bytes, truncation,
duplicate keys, nesting past the limit, integers past 64 bits, NaN and
Infinity, lines just under and just over the line limit. Drawing whole lines
with hypothesis costs ~3 ms a line; the pools and the mix give 100,000 lines in
a few seconds, the same lines for the same seed.
"""

from __future__ import annotations

import json
import random
import tempfile
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from hyperhive.wire import INT_MAX, INT_MIN, MAX_DEPTH, MAX_LINE
from hyperhive.wire_requests import OPS, schema

__all__ = ["PING", "SEQ", "Line", "Mixer", "Pools", "expects_reply", "render", "tame"]

PING = "ping:"  # the prefix of the ids of the runner's own pings; no fuzzed id starts with it
OP_NAMES = tuple(sorted(OPS))
# Texts a field is likely to hold, so the ops run past their first check: agents
# (the fuzzed one, the one it may send to, the manager, reserved names), states,
# kinds, tools, windows, JSON texts.
LIKELY = ("fz", "sink", "m1nd", "system", "operator", "nobody", "", "idle", "thinking", "compacting", "turn",
          "compact", "harness", "Bash", "Read", "mcp__hyperhive__send", "24h", "7d", "all", "{}", '{"a": 1}', "[]")

SURROGATES = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
TEXTS = st.one_of(
    st.text(max_size=24),
    st.text(st.characters(max_codepoint=0x7F), max_size=24),  # NUL and the other control characters
    st.text(st.one_of(st.characters(), SURROGATES), max_size=12),  # lone surrogates
)
INTS = st.one_of(st.integers(-5, 300), st.integers(),
                 st.sampled_from([INT_MAX, INT_MAX + 1, INT_MIN, INT_MIN - 1, 1 << 200, -(1 << 200)]))
FLOATS = st.one_of(st.floats(), st.sampled_from([0.0, -0.0, 0.001, 0.5, 1e308, 5e-324, 1e6, 1e6 + 1]))
JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), INTS, FLOATS, TEXTS),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXTS, inner, max_size=4), max_leaves=8)
GARBAGE = st.binary(min_size=1, max_size=200)


def draw_pool(strategy: st.SearchStrategy[Any], count: int, seed: int, batch: int = 50) -> list[Any]:
    """About ``count`` values of ``strategy`` (distinct, in the order drawn): hypothesis, seeded."""
    out: dict[str, Any] = {}

    @hypothesis_seed(seed)
    @settings(max_examples=max(1, count // batch), phases=[Phase.generate], database=None, deadline=None,
              suppress_health_check=list(HealthCheck), print_blob=False)
    @given(st.lists(strategy, min_size=batch, max_size=batch))
    def collect(values: list[Any]) -> None:
        for v in values:
            out.setdefault(repr(v), v)

    collect()
    return list(out.values())


@dataclass(frozen=True)
class Pools:
    texts: list[str]
    ints: list[int]
    floats: list[float]
    values: list[Any]  # any JSON value
    garbage: list[bytes]

    @classmethod
    def draw(cls, seed: int, scale: int = 4000) -> Pools:
        # Hypothesis keeps a cache (the constants of the code under test) in its home
        # dir, ./.hypothesis by default: not in the checkout.
        set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "hyperhive-hypothesis")
        return cls(texts=draw_pool(TEXTS, scale * 2, seed), ints=draw_pool(INTS, scale, seed + 1),
                   floats=draw_pool(FLOATS, scale, seed + 2), values=draw_pool(JSON_VALUES, scale, seed + 3),
                   garbage=[b.replace(b"\n", b" ") for b in draw_pool(GARBAGE, scale // 2, seed + 4)])


class Seq:
    """Where the line's sequence number goes as its id (an `internal` reply names its line by it)."""


SEQ = Seq()


@dataclass(frozen=True)
class Line:
    """A line to send, before its id is known: ``obj`` rendered as JSON with
    ``mutation`` at ``where`` (a fraction of its length), or ``raw`` bytes."""

    obj: Any = None
    raw: bytes | None = None
    ascii: bool = True
    mutation: str = "none"
    where: float = 0.0
    size: int = 0


MUTATIONS = ("none",) * 12 + ("nul", "bad_utf8", "truncate", "dup_key", "deep", "deep_object", "huge_int",
                              "constant", "spaces")
BAD_UTF8 = (b"\xff", b"\x80", b"\xc0\x80", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\xe2\x82", b"\xf4\x90\x80\x80")
DEPTHS = (MAX_DEPTH - 2, MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 1, 100, 1000, 5000, 20_000)
DIGITS = (19, 20, 21, 400, 5000, 50_000)
CONSTANTS = (b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e999", b"1e-999", b"-0", b"0.0e0", b"01", b"+1")
LONG = (-64, -2, -1, 0, 1, 2, 100, 65_536, 1 << 20)  # bytes from the line limit


class Mixer:
    """Lines from the pools, chosen by a seeded ``random.Random``. ``long_every``:
    about one line in this many is within 64 bytes of the limit or past it (each
    costs a MiB)."""

    def __init__(self, pools: Pools, seed: int, long_every: int = 1000) -> None:
        self.p = pools
        self.rng = random.Random(seed)
        self.long_every = long_every

    def text(self) -> str:
        return self.rng.choice(LIKELY) if self.rng.random() < 0.3 else self.rng.choice(self.p.texts)

    def shaped(self, tp: Any) -> Any:
        """A value of the wire type ``tp`` (what `wire_requests.build` accepts), out-of-range ones among them."""
        r = self.rng
        origin = typing.get_origin(tp)
        if origin in (Union, typing.get_origin(int | None)):
            return self.shaped(r.choice(typing.get_args(tp)))
        if tp is type(None):
            return None
        if tp is bool:
            return r.random() < 0.5
        if tp is int:
            return r.choice(self.p.ints)
        if tp is float:
            return r.choice(self.p.floats) if r.random() < 0.7 else r.choice(self.p.ints)
        if tp is str:
            return self.text()
        if origin is list:
            (item,) = typing.get_args(tp)
            return [self.shaped(item) for _ in range(r.randrange(5))]
        if origin is dict:  # e.g. request_spawn's resources
            key, value = typing.get_args(tp)
            return {self.shaped(key): self.shaped(value) for _ in range(r.randrange(4))}
        raise TypeError(f"no value for wire type {tp!r}")

    def request(self) -> dict[str, Any]:
        """One request object: an op of OPS (mostly), its fields each of its type,
        of another, or left out; now and then fields it does not take."""
        r = self.rng
        kind = r.randrange(20)
        fields: tuple[tuple[str, Any, bool, Any], ...] = ()
        if kind < 17:
            op: Any = r.choice(OP_NAMES)
            fields = schema(op)[0]
        else:
            op = self.text() if kind < 19 else r.choice(self.p.values)
        obj: dict[str, Any] = {}
        which = r.randrange(20)
        if which < 16:
            obj["id"] = SEQ
        elif which < 18:
            odd = r.choice(self.p.values)
            obj["id"] = odd if not (isinstance(odd, str) and odd.startswith(PING)) else 0
        if r.randrange(30):
            obj["op"] = op
        for name, tp, _required, _check in fields:
            mode = r.randrange(10)
            if mode < 7:
                obj[name] = self.shaped(tp)
            elif mode < 9:
                obj[name] = r.choice(self.p.values)
        for _ in range(r.randrange(4) if r.randrange(10) == 0 else 0):
            key = self.text()
            if key != "id":
                obj[key] = r.choice(self.p.values)
        return tame(obj, r.uniform(0, 0.02))

    def line(self) -> Line:
        """One fuzzed line: mostly a request object, else JSON that is no object, raw bytes, or blanks."""
        r = self.rng
        kind = r.randrange(100)
        if kind < 84 or self.long_every <= 1:
            mutation = "long" if r.randrange(self.long_every) == 0 else r.choice(MUTATIONS)
            size = 0
            if mutation in ("deep", "deep_object"):
                size = r.choice(DEPTHS)
            elif mutation == "huge_int":
                size = r.choice(DIGITS)
            elif mutation == "long":
                size = MAX_LINE + r.choice(LONG)
            return Line(obj=self.request(), ascii=r.random() < 0.5, mutation=mutation, where=r.random(), size=size)
        if kind < 90:
            value = r.choice(self.p.values)
            return Line(obj=[] if isinstance(value, dict) else value, ascii=r.random() < 0.5)
        if kind < 98:
            return Line(raw=r.choice(self.p.garbage))
        return Line(raw=bytes(r.choice(b" \t\r\x0b\x0c") for _ in range(r.randrange(9))))


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def tame(obj: dict[str, Any], short_wait: float) -> dict[str, Any]:
    """Keep the run from parking: a recv waits at most ``short_wait`` (none given
    is the daemon's default, 30 s), a recent asks for at most 100 rows (a reply
    is up to 1 MiB), and a permission request asks with an input that is no
    object (a valid one parks on an operator question until its TTL)."""
    op = obj.get("op")
    if op == "recv":
        wait = obj.get("wait_seconds")
        if wait is None or (_number(wait) and not wait < short_wait):
            obj["wait_seconds"] = short_wait
    elif op == "recent" and _number(obj.get("limit")) and 100 < obj["limit"] <= INT_MAX:
        obj["limit"] = 100
    elif op == "permission" and isinstance(obj.get("input_json"), str):
        obj["input_json"] = "[]"
    return obj


def _bind(value: Any, seq: int) -> Any:
    if value is SEQ:
        return seq
    if isinstance(value, dict):
        return {k: _bind(v, seq) for k, v in value.items()}
    return value


def _at(data: bytes, where: float) -> int:
    return min(len(data), int(len(data) * where))


def _splice(data: bytes, member: bytes) -> bytes:
    """``member`` (``"k":value``) as the object's first member (the line as a field of one, if no object)."""
    if data.startswith(b"{"):
        return b"{" + member + (b"}" if data == b"{}" else b"," + data[1:])
    return b"{" + member + b',"v":' + data + b"}"


def _pad_to(obj: Any, size: int) -> bytes:
    """The object grown to ``size`` bytes: a send's body, else a field named pad."""
    key = "body" if isinstance(obj, dict) and obj.get("op") == "send" and "body" in obj else "pad"
    base = obj if isinstance(obj, dict) else {"v": obj}
    stub = json.dumps({**base, key: ""}, ensure_ascii=True, separators=(",", ":")).encode()
    return stub.replace(f'"{key}":""'.encode(), f'"{key}":"{"a" * max(0, size - len(stub))}"'.encode(), 1)


def render(line: Line, seq: int) -> bytes:
    """The bytes of ``line`` (no newline) with ``seq`` as its id where it has one."""
    if line.raw is not None:
        return line.raw
    obj = _bind(line.obj, seq)
    text = json.dumps(obj, ensure_ascii=line.ascii, separators=(",", ":"))
    data = text.encode("utf-8", "surrogatepass")  # a raw lone surrogate: invalid UTF-8, on purpose
    m, at = line.mutation, _at(data, line.where)
    if m == "nul":
        data = data[:at] + b"\x00" + data[at:]
    elif m == "bad_utf8":
        data = data[:at] + BAD_UTF8[seq % len(BAD_UTF8)] + data[at:]
    elif m == "truncate":
        data = data[:at]
    elif m == "dup_key":
        data = _splice(data, b'"op":"ping"' if seq % 2 else b'"id":"' + PING.encode() + b'x"')
    elif m == "deep":
        data = _splice(data, b'"deep":' + b"[" * line.size + b"]" * line.size)
    elif m == "deep_object":
        data = _splice(data, b'"deep":' + b'{"a":' * line.size + b"0" + b"}" * line.size)
    elif m == "huge_int":
        data = _splice(data, b'"n":' + (b"-" if seq % 2 else b"") + b"9" * line.size)
    elif m == "constant":
        data = _splice(data, b'"n":' + CONSTANTS[seq % len(CONSTANTS)])
    elif m == "spaces":
        data = b" \t" + data + b"\r "
    elif m == "long":
        data = _pad_to(obj, line.size)
    return data.replace(b"\n", b" ")


def expects_reply(data: bytes) -> bool:
    """Whether the daemon answers this line: all but the blank ones (a blank one past the limit is answered)."""
    return len(data) > MAX_LINE or bool(data.strip())


