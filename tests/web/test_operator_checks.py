"""The operator service's checks, pure: a table of inputs and the error code
each surface answers them with (the dashboard and the admin socket both go
through these)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from hyperhive.actors.snapshots import ContainerSnapshot
from hyperhive.errors import HiveError
from hyperhive.web.operator import checks

OK = None

CASES: list[tuple[str, Callable[[], Any], str | None]] = [
    # send: text, not blank, at most 64 KiB characters
    ("body ok", lambda: checks.check_body("hello"), OK),
    ("body of exactly MAX_BODY", lambda: checks.check_body("x" * checks.MAX_BODY), OK),
    ("body empty", lambda: checks.check_body(""), "bad_request"),
    ("body blank", lambda: checks.check_body(" \n\t"), "bad_request"),
    ("body over MAX_BODY", lambda: checks.check_body("x" * (checks.MAX_BODY + 1)), "bad_request"),
    ("body a lone surrogate", lambda: checks.check_body("a\ud800b"), "bad_request"),
    ("body not text", lambda: checks.check_body(5), "bad_request"),
    # recipients
    ("to an agent", lambda: checks.check_recipient("alice"), OK),
    ("to the operator", lambda: checks.check_recipient("operator"), OK),
    ("to ..", lambda: checks.check_recipient(".."), "bad_name"),
    ("to a/b", lambda: checks.check_recipient("a/b"), "bad_name"),
    ("to a NUL", lambda: checks.check_recipient("a\x00b"), "bad_name"),
    ("to upper case", lambda: checks.check_recipient("A"), "bad_name"),
    ("to a lone surrogate", lambda: checks.check_recipient("b\udfff"), "bad_request"),
    ("to a number", lambda: checks.check_recipient(5), "bad_name"),
    # ids: positive 64-bit integers, or their digits
    ("id int", lambda: checks.check_id(7), OK),
    ("id digits", lambda: checks.check_id("7"), OK),
    ("id zero", lambda: checks.check_id(0), "bad_request"),
    ("id negative", lambda: checks.check_id(-3), "bad_request"),
    ("id a word", lambda: checks.check_id("abc"), "bad_request"),
    ("id minus digits", lambda: checks.check_id("-1"), "bad_request"),
    ("id a float string", lambda: checks.check_id("1.5"), "bad_request"),
    ("id non-ascii digits", lambda: checks.check_id("\u0661"), "bad_request"),
    ("id too many digits", lambda: checks.check_id("9" * 25), "bad_request"),
    ("id past int64", lambda: checks.check_id(str(1 << 63)), "bad_request"),
    ("id a bool", lambda: checks.check_id(True), "bad_request"),
    ("id None", lambda: checks.check_id(None), "bad_request"),
    # limits
    ("limit 1", lambda: checks.check_limit(1), OK),
    ("limit 0", lambda: checks.check_limit(0), "bad_request"),
    ("limit a bool", lambda: checks.check_limit(True), "bad_request"),
    ("limit text", lambda: checks.check_limit("5"), "bad_request"),
    # lifecycle: a verb, a name, never the manager on itself
    ("operator starts m1nd", lambda: checks.check_lifecycle("start", "m1nd", "operator"), OK),
    ("manager restarts an agent", lambda: checks.check_lifecycle("restart", "alice", "m1nd"), OK),
    ("manager restarts itself", lambda: checks.check_lifecycle("restart", "m1nd", "m1nd"), "forbidden"),
    ("manager kills itself", lambda: checks.check_lifecycle("kill", "m1nd", "m1nd"), "forbidden"),
    ("not a verb", lambda: checks.check_lifecycle("fly", "alice", "operator"), "bad_request"),
    ("lifecycle on ..", lambda: checks.check_lifecycle("stop", "..", "operator"), "bad_name"),
    ("lifecycle on a/b", lambda: checks.check_lifecycle("stop", "a/b", "operator"), "bad_name"),
    # destroy: never the manager
    ("destroy alice", lambda: checks.check_destroyable("alice"), OK),
    ("destroy m1nd", lambda: checks.check_destroyable("m1nd"), "conflict"),
    ("destroy ../x", lambda: checks.check_destroyable("../x"), "bad_name"),
    # spawnable names: valid and not reserved
    ("spawn alice", lambda: checks.check_spawnable("alice"), OK),
    ("spawn operator", lambda: checks.check_spawnable("operator"), "bad_name"),
    ("spawn system", lambda: checks.check_spawnable("system"), "bad_name"),
    ("spawn a NUL", lambda: checks.check_spawnable("a\x00"), "bad_name"),
    ("spawn a lone surrogate", lambda: checks.check_spawnable("a\ud800"), "bad_request"),
    # spawn configs
    ("config empty", lambda: checks.spawn_config(None, None), OK),
    ("config allow list", lambda: checks.spawn_config(["alice", "operator"], "builtin"), OK),
    ("config bad allowed name", lambda: checks.spawn_config(["../x"]), "bad_name"),
    ("config unknown driver", lambda: checks.spawn_config(None, "gpt"), "bad_request"),
    # free text
    ("reason a lone surrogate", lambda: checks.check_reason("x\ud800"), "bad_request"),
    ("prompt not text", lambda: checks.check_prompt(3), "bad_request"),
]


@pytest.mark.parametrize(("what", "check", "code"), CASES, ids=[c[0] for c in CASES])
def test_each_check_passes_or_refuses_with_its_code(what: str, check: Callable[[], Any], code: str | None) -> None:
    if code is None:
        check()
        return
    with pytest.raises(HiveError) as err:
        check()
    assert err.value.code == code, (what, err.value)
    assert err.value.message


@pytest.mark.parametrize(("raw", "want"), [(None, None), ("", None), ("  ", None), (" late ", "late")])
def test_a_blank_reason_is_none_and_a_reason_is_stripped(raw: Any, want: str | None) -> None:
    assert checks.check_reason(raw) == want


@pytest.mark.parametrize(("raw", "want"), [(None, None), ("", None), ("\n", None), ("be kind\n", "be kind\n")])
def test_a_blank_prompt_is_none_and_a_prompt_is_kept_as_written(raw: Any, want: str | None) -> None:
    assert checks.check_prompt(raw) == want


@pytest.mark.parametrize(("total", "shown", "more"), [(0, 0, 0), (5, 5, 0), (70, 50, 20), (3, 4, 0)])
def test_more_counts_what_a_listing_left_out(total: int, shown: int, more: int) -> None:
    assert checks.more_of(total, shown) == more


def test_ids_come_back_as_ints() -> None:
    assert checks.check_id("42") == 42 and checks.check_id(42) == 42


def test_a_snapshot_goes_out_as_its_wire_dict_whichever_form_ls_gave() -> None:
    snap = ContainerSnapshot("alice", "agent", "running", pid=7)
    assert checks.wire_snapshot(snap) == snap.to_wire()
    assert checks.wire_snapshot(snap.to_wire()) == snap.to_wire()
