"""What the CLI prints for a person never carries an agent's control sequences
raw: a body, a question or a log line an agent wrote can hold ESC (OSC 52
clipboard writes, cursor moves that forge lines), C1 controls or bidi
overrides. Text comes out escaped (line breaks kept); --json is ASCII."""

from __future__ import annotations

import argparse
import json

import pytest

from hyperhive import cli_gate
from hyperhive.logs import terminal_safe

HOSTILE = "hi\x1b]52;c;Y3VybCBldmlsfHNo\x07 \x1b[2K\x9b2J \u202eevil\u2066 \x00end"


def test_terminal_safe_escapes_controls_and_bidi_but_keeps_what_is_asked() -> None:
    out = terminal_safe("a\x1b[1mb\tc\nd\u202e", keep="\n")
    assert out == "a\\x1b[1mb\\tc\nd\\u202e"
    assert terminal_safe("plain ünïcode — fine") == "plain ünïcode — fine"


def test_a_hostile_inbox_row_prints_escaped(capsys: pytest.CaptureFixture[str]) -> None:
    reply = {"messages": [{"id": 1, "sent_at": 0.0, "from": "a", "body": HOSTILE + "\nsecond line"}], "more": 2}
    ns = argparse.Namespace(json=False)
    cli_gate.show_list(reply, ns, "messages", "(inbox empty)", lambda m: cli_gate.say(f"{m['from']}: {m['body']}"))
    out = capsys.readouterr().out
    assert not any(c in out for c in "\x1b\x07\x9b\u202e\u2066\x00"), repr(out)
    assert "\\x1b]52;c;" in out and "\nsecond line" in out and "(2 more; --limit)" in out


def test_json_listings_are_ascii(capsys: pytest.CaptureFixture[str]) -> None:
    reply = {"messages": [{"id": 1, "body": HOSTILE}]}
    cli_gate.show_list(reply, argparse.Namespace(json=True), "messages", "", lambda m: None)
    out = capsys.readouterr().out
    assert out.isascii()
    assert json.loads(out)["messages"][0]["body"] == HOSTILE and json.loads(out)["more"] == 0
