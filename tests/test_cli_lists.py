"""The listing verbs say when the daemon cut the list: ``hive inbox`` prints
``(N more; --limit)``, and every listing's ``--json`` carries ``more``; a
reply without ``more`` (a daemon from before it) counts as 0."""

from __future__ import annotations

import json
from typing import Any

import pytest

from hyperhive import cli, cli_gate
from hyperhive.cli_ls import more_count, more_note

QUESTION = {"id": 3, "asked_at": 0.0, "asker": "m1nd", "deadline_at": None, "question": "go?", "options": [],
            "multi": False, "default": None}
STONE = {"name": "old", "size_bytes": 2048, "age_seconds": 7200, "credentials_kept": False}
APPROVAL = {"id": 9, "requested_at": 0.0, "requested_by": "m1nd", "kind": "spawn", "agent": "bob",
            "status": "pending", "diff_html": ""}
MESSAGE = {"id": 1, "sent_at": 0.0, "from": "a", "body": "hi"}

# verb, the rows' key and one row, the start of its line
GATE = [("questions", "pending", QUESTION, "#3 "), ("approvals", "pending", APPROVAL, "#9 "),
        ("tombstones", "tombstones", STONE, "old  2 KiB")]


def gate(argv: list[str], reply: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """A gate verb answering ``reply``; returns the requests it made."""
    asked: list[tuple[str, dict[str, Any]]] = []

    def admin(op: str, **fields: Any) -> dict[str, Any]:
        asked.append((op, fields))
        return reply

    cli_gate.run(cli._parser().parse_args(argv), admin)
    return asked


def inbox(argv: list[str], reply: dict[str, Any]) -> None:
    """`hive inbox`'s printing of ``reply`` (the request itself is the daemon's to answer)."""
    ns = cli._parser().parse_args(["inbox", *argv])
    cli_gate.show_list(reply, ns, "messages", "(inbox empty)", lambda m: print(f"#{m['id']} {m['body']}"))


@pytest.mark.parametrize(("reply", "want"), [({}, 0), ({"more": 0}, 0), ({"more": 4}, 4), ({"more": -1}, 0),
                                             ({"more": True}, 0), ({"more": "3"}, 0)])
def test_more_count(reply: dict[str, Any], want: int) -> None:
    assert more_count(reply) == want
    assert more_note(reply) == (f"({want} more; --limit)" if want else "")


def test_a_cut_inbox_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    inbox([], {"messages": [MESSAGE], "more": 12})
    assert capsys.readouterr().out.splitlines() == ["#1 hi", "(12 more; --limit)"]


@pytest.mark.parametrize("reply", [{"messages": [MESSAGE]}, {"messages": [MESSAGE], "more": 0}])
def test_a_whole_inbox_says_nothing_more(capsys: pytest.CaptureFixture[str], reply: dict[str, Any]) -> None:
    inbox([], reply)  # before the daemon says `more`, and after
    assert capsys.readouterr().out.splitlines() == ["#1 hi"]


def test_inbox_json_carries_more(capsys: pytest.CaptureFixture[str]) -> None:
    inbox(["--json"], {"messages": [MESSAGE], "more": 5})
    assert json.loads(capsys.readouterr().out) == {"messages": [MESSAGE], "more": 5}
    inbox(["--json"], {"messages": []})
    assert json.loads(capsys.readouterr().out) == {"messages": [], "more": 0}


@pytest.mark.parametrize(("verb", "key", "row", "line"), GATE, ids=[g[0] for g in GATE])
def test_gate_listings(capsys: pytest.CaptureFixture[str], verb: str, key: str, row: dict[str, Any],
                       line: str) -> None:
    assert gate([verb], {key: [row], "more": 7}) == [(verb, {})]
    out = capsys.readouterr().out.splitlines()
    # their `more` counts rows the text does not list (resolved questions, decided approvals): no note
    assert out[0].startswith(line) and not any("more" in x for x in out), out
    gate([verb, "--json"], {key: [row], "more": 7})
    assert json.loads(capsys.readouterr().out) == {key: [row], "more": 7}
    gate([verb, "--json"], {key: [row]})
    assert json.loads(capsys.readouterr().out) == {key: [row], "more": 0}
