"""`plan`, the builtin driver's pure decision per message: the cases
tests/harness/test_builtin_plan.py leaves out. Web UI notes against every
check and the order of the checks, the reply mark from anyone, the quote's
exact cap, and how ``send`` splits its words."""

from __future__ import annotations

import pytest

from hyperhive.harness.builtin import Action, plan
from hyperhive.harness.turns import Note
from hyperhive.names import MANAGER, OPERATOR, SYSTEM
from hyperhive.wire import InboxRow

ME = "a"
MARK = f"[builtin reply from {ME}]"
SENDER = f"{MARK} run refused: only the operator or the manager may run commands here"
UNSANDBOXED = f"{MARK} run refused: this agent is not sandboxed"
UNVERIFIED = f"{MARK} run refused: a note posted to the web UI is not verified as the operator's"
QUOTE_MAX = 200


def msg(from_: str, body: str) -> InboxRow:
    return InboxRow(7, from_, ME, body, 0.0, 0.0)


def note(body: str, verified: bool) -> Note:
    return Note.make(ME, body, 0.0, verified=verified)


def said(to: str, text: str) -> list[Action]:
    return [Action(to=to, body=f'{MARK} you said: "{text}"')]


def reply(to: str, body: str) -> list[Action]:
    return [Action(to=to, body=body)]


# --- web UI notes: verified or not, sandboxed or not -----------------------------

@pytest.mark.parametrize(
    ("body", "verified", "shell_allowed", "expected"),
    [
        ("run id", True, True, [Action(to=OPERATOR, body="", command="id")]),
        ("run id", True, False, reply(OPERATOR, UNSANDBOXED)),
        ("run id", False, True, reply(OPERATOR, UNVERIFIED)),
        ("run id", False, False, reply(OPERATOR, UNVERIFIED)),  # the note check comes before the sandbox's
        ("hello there", False, True, said(OPERATOR, "hello there")),  # not a run: quoted as any message
        ("send b hi", False, True, [Action(to="b", body="hi", then_confirm_to=OPERATOR)]),
        (f"{MARK} you said: \"x\"", False, True, []),
    ],
    ids=["verified-run", "verified-unsandboxed", "unverified-run", "unverified-unsandboxed", "unverified-chat",
         "unverified-send", "unverified-reply-mark"],
)
def test_plan_for_a_web_ui_note(body: str, verified: bool, shell_allowed: bool, expected: list[Action]) -> None:
    assert plan(ME, note(body, verified), shell_allowed=shell_allowed) == expected


def test_a_message_off_the_socket_needs_no_verification() -> None:
    """An inbox row (not a Note) carries its sender from the socket it came on."""
    assert plan(ME, msg(OPERATOR, "run id"), shell_allowed=True) == [Action(to=OPERATOR, body="", command="id")]


# --- the reply mark and system: never answered, whoever sends them ---------------

@pytest.mark.parametrize("sender", [OPERATOR, MANAGER, "alice", SYSTEM])
@pytest.mark.parametrize("body", [
    "[builtin reply from b] you said: \"hi\"",
    "[builtin reply from a] run: exit 0\n",
    "[builtin reply from ",
    "[builtin reply from b] run ls",
])
def test_a_builtin_reply_is_never_answered(sender: str, body: str) -> None:
    assert plan(ME, msg(sender, body), shell_allowed=True) == []


@pytest.mark.parametrize("body", ["run id", "send b hi", "hello", ""])
def test_system_is_never_answered(body: str) -> None:
    assert plan(ME, msg(SYSTEM, body), shell_allowed=True) == []


def test_a_reply_mark_not_at_the_start_is_an_ordinary_message() -> None:
    assert plan(ME, msg("alice", "x [builtin reply from b]")) == said("alice", "x [builtin reply from b]")


# --- the quote ------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("body", "quoted"),
    [
        ("", ""),
        ("x" * QUOTE_MAX, "x" * QUOTE_MAX),  # exactly the cap: whole
        ("x" * (QUOTE_MAX + 1), "x" * (QUOTE_MAX - 1) + "…"),  # one over: cut, with the ellipsis inside the cap
        ("  a \n\t b  ", "a b"),  # whitespace runs become one space, ends trimmed
        ("a " * 150, ("a " * 100)[:QUOTE_MAX - 1] + "…"),  # the cap counts the collapsed text
        ("é" * QUOTE_MAX, "é" * QUOTE_MAX),  # characters, not bytes
        ('say "hi"', 'say "hi"'),
    ],
    ids=["empty", "at-cap", "over-cap", "whitespace", "collapsed-then-capped", "characters", "quotes-kept"],
)
def test_the_quote(body: str, quoted: str) -> None:
    [action] = plan(ME, msg("alice", body))
    assert action == Action(to="alice", body=f'{MARK} you said: "{quoted}"')
    assert len(quoted) <= QUOTE_MAX


# --- send <agent> <text> ---------------------------------------------------------------

@pytest.mark.parametrize(
    ("sender", "body", "expected"),
    [
        ("alice", "send b hi", [Action(to="b", body="hi", then_confirm_to="alice")]),
        (OPERATOR, "send b hi", [Action(to="b", body="hi", then_confirm_to=OPERATOR)]),
        ("alice", "send  b   hello  there ", [Action(to="b", body="hello  there ", then_confirm_to="alice")]),
        ("alice", "send\tb\nline one\nline two", [Action(to="b", body="line one\nline two", then_confirm_to="alice")]),
        # a relayed run is only text for b: b sees it come from a, who may not run anything there
        ("alice", "send b run rm -rf /", [Action(to="b", body="run rm -rf /", then_confirm_to="alice")]),
        ("alice", "send a hi", [Action(to="a", body="hi", then_confirm_to="alice")]),  # to itself: plan does not judge
        ("alice", "Send b hi", said("alice", "Send b hi")),
        ("alice", "sendb x y", said("alice", "sendb x y")),
        ("alice", " send b hi", [Action(to="b", body="hi", then_confirm_to="alice")]),  # unlike run: leading space ok
    ],
    ids=["plain", "from-operator", "spaces", "tabs-newlines", "relayed-run", "to-self", "capital", "glued",
         "leading-space"],
)
def test_send(sender: str, body: str, expected: list[Action]) -> None:
    assert plan(ME, msg(sender, body)) == expected
