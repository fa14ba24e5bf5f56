"""hyperhive.errors: the code registry, from_wire, request_id and the tree docstring."""

from __future__ import annotations

import json
import re

import pytest

from hyperhive import errors
from hyperhive.errors import (
    BadRequest,
    ConnectFailed,
    ConnectionLost,
    HiveError,
    TimedOut,
    TransportError,
    Unavailable,
    from_wire,
)

WIRE = sorted((code, cls) for code, cls in errors._BY_CODE.items() if cls.on_wire)
TRANSPORT = [TransportError, ConnectFailed, ConnectionLost, TimedOut]


def test_the_registry_holds_every_declared_code() -> None:
    assert [code for code, _ in WIRE] == sorted([
        "bad_request", "bad_json", "line_too_long", "unknown_op", "bad_name", "not_allowed", "forbidden",
        "unknown_agent", "unknown_id", "conflict", "unavailable", "storage_unavailable", "backend_failed", "internal",
    ])
    assert {cls for cls in errors._BY_CODE.values() if not cls.on_wire} == set(TRANSPORT)


@pytest.mark.parametrize(("code", "cls"), WIRE, ids=[code for code, _ in WIRE])
def test_every_wire_code_round_trips(code: str, cls: type[HiveError]) -> None:
    sent = cls("what happened: caf\u00e9")
    assert sent.code == code
    wire = json.loads(json.dumps(sent.to_wire()))
    assert wire == {"code": code, "message": "what happened: caf\u00e9"}
    back = from_wire(wire, request_id=7)
    assert type(back) is cls
    assert (back.code, back.status, back.message, back.request_id) == (code, cls.status, sent.message, 7)


@pytest.mark.parametrize(
    ("wire", "code"),
    [
        ({"code": "from_a_newer_daemon", "message": "m"}, "from_a_newer_daemon"),
        ({"message": "m"}, "internal"),
        ({"code": None, "message": "m"}, "internal"),
        ({"code": 5, "message": "m"}, "internal"),
        ({"code": "", "message": "m"}, "internal"),
    ],
    ids=["unknown", "missing", "null", "not-a-string", "empty"],
)
def test_an_unknown_code_gives_a_plain_hive_error_that_keeps_it(wire: dict[str, object], code: str) -> None:
    err = from_wire(wire)
    assert type(err) is HiveError
    assert (err.code, err.message, err.status) == (code, "m", 500)
    assert HiveError.code == "internal"  # the instance's code, not the class's


@pytest.mark.parametrize("cls", TRANSPORT, ids=[c.__name__ for c in TRANSPORT])
def test_transport_codes_never_come_from_the_wire(cls: type[HiveError]) -> None:
    err = from_wire({"code": cls.code, "message": "m"})
    assert type(err) is HiveError and err.code == cls.code


def test_the_transport_family_is_apart_from_unavailable() -> None:
    for cls in TRANSPORT:
        assert issubclass(cls, TransportError) and issubclass(cls, HiveError)
        assert not issubclass(cls, Unavailable)
        assert cls.status == 503
    assert not issubclass(Unavailable, TransportError)
    assert len({cls.code for cls in TRANSPORT}) == len(TRANSPORT)


def test_a_duplicate_code_is_refused_at_definition() -> None:
    with pytest.raises(TypeError, match=r"'conflict' of .*Clash is already Conflict's"):
        class Clash(HiveError, code="conflict"):
            pass
    assert errors._BY_CODE["conflict"] is errors.Conflict
    with pytest.raises(TypeError, match="already TimedOut's"):
        class Clash2(BadRequest, code="timed_out"):
            pass


def test_a_subclass_without_a_code_shares_its_parents_and_is_not_recorded() -> None:
    before = dict(errors._BY_CODE)

    class Narrower(BadRequest):
        pass

    assert (Narrower.code, Narrower.status) == ("bad_request", 400)
    assert before == errors._BY_CODE
    assert type(from_wire(Narrower("m").to_wire())) is BadRequest


def test_request_id_is_a_keyword_only_constructor_field() -> None:
    assert HiveError("m").request_id is None
    assert BadRequest("m", request_id="a-7").request_id == "a-7"
    with pytest.raises(TypeError):
        BadRequest("m", 3)  # type: ignore[call-arg]
    assert BadRequest("m", request_id=3).to_wire() == {"code": "bad_request", "message": "m"}


def test_the_tree_in_the_docstring_matches_the_classes() -> None:
    doc = errors.__doc__ or ""
    rows = re.findall(r"^[│├└─\s]*([A-Z]\w+)\s+(\w+)\s+(\d{3})\s", doc, re.M)
    listed = {name: (code, int(status)) for name, code, status in rows}
    declared = {cls.__name__: (cls.code, cls.status) for cls in errors._BY_CODE.values()}
    assert listed == declared
