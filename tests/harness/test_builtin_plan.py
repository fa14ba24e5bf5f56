"""`plan`, the builtin driver's pure decision per message: who may make an
agent run a shell command, what counts as a `run`, and that sends and the
quoting reply work as before."""

from __future__ import annotations

import pytest

from hyperhive.harness.builtin import Action, plan, run_reply
from hyperhive.harness.builtin_shell import OUTPUT_MAX, TRUNCATED, RunResult
from hyperhive.names import MANAGER, OPERATOR, SYSTEM
from hyperhive.wire import InboxRow

ME = "a"
SENDER_REFUSAL = f"[builtin reply from {ME}] run refused: only the operator or the manager may run commands here"
SANDBOX_REFUSAL = f"[builtin reply from {ME}] run refused: this agent is not sandboxed"


def msg(from_: str, body: str) -> InboxRow:
    return InboxRow(1, from_, ME, body, 0.0, 0.0)


def run(to: str, command: str) -> list[Action]:
    return [Action(to=to, body="", command=command)]


def quoted(to: str, text: str) -> list[Action]:
    return [Action(to=to, body=f'[builtin reply from {ME}] you said: "{text}"')]


@pytest.mark.parametrize(
    ("sender", "body", "shell_allowed", "expected"),
    [
        # who may run
        (OPERATOR, "run ls -la", True, run(OPERATOR, "ls -la")),
        (MANAGER, "run ls -la", True, run(MANAGER, "ls -la")),
        ("alice", "run ls -la", True, [Action(to="alice", body=SENDER_REFUSAL)]),
        (SYSTEM, "run ls -la", True, []),  # system is never answered, let alone obeyed
        # sandboxed or not
        (OPERATOR, "run ls", False, [Action(to=OPERATOR, body=SANDBOX_REFUSAL)]),
        (MANAGER, "run ls", False, [Action(to=MANAGER, body=SANDBOX_REFUSAL)]),
        ("alice", "run ls", False, [Action(to="alice", body=SENDER_REFUSAL)]),  # the sender check comes first
        # what a run is: the word, whitespace, then the rest verbatim
        (OPERATOR, "run   ls", True, run(OPERATOR, "ls")),
        (OPERATOR, "run\tls  -l  ", True, run(OPERATOR, "ls  -l  ")),
        (OPERATOR, "run\n  echo one\n  echo two\n", True, run(OPERATOR, "echo one\n  echo two\n")),
        (OPERATOR, "run cat <<'EOF'\nx  y\nEOF", True, run(OPERATOR, "cat <<'EOF'\nx  y\nEOF")),
        (OPERATOR, "run send b hi", True, run(OPERATOR, "send b hi")),
        # not a run: an ordinary message, quoted back
        (OPERATOR, "run", True, quoted(OPERATOR, "run")),
        (OPERATOR, "run   \n ", True, quoted(OPERATOR, "run")),
        (OPERATOR, "runner x", True, quoted(OPERATOR, "runner x")),
        (OPERATOR, "Run ls", True, quoted(OPERATOR, "Run ls")),
        (OPERATOR, " run ls", True, quoted(OPERATOR, "run ls")),
        (OPERATOR, "please run ls", True, quoted(OPERATOR, "please run ls")),
        ("alice", "runner x", False, quoted("alice", "runner x")),
        # sends and replies as before
        ("alice", "send b hello  there", True, [Action(to="b", body="hello  there", then_confirm_to="alice")]),
        (OPERATOR, "send b", True, quoted(OPERATOR, "send b")),
        ("alice", "hello\n  world", False, quoted("alice", "hello world")),
        (SYSTEM, "kick", True, []),
        ("b", "[builtin reply from b] you said: \"x\"", True, []),
        ("b", "[builtin reply from b] run: exit 0\n", True, []),  # a run's reply is never answered either
    ],
)
def test_plan(sender: str, body: str, shell_allowed: bool, expected: list[Action]) -> None:
    assert plan(ME, msg(sender, body), shell_allowed=shell_allowed) == expected


def test_plan_refuses_runs_unless_told_the_agent_is_sandboxed() -> None:
    """The default is the safe one: a caller that does not say refuses."""
    assert plan(ME, msg(OPERATOR, "run id")) == [Action(to=OPERATOR, body=SANDBOX_REFUSAL)]


def test_the_quote_is_capped() -> None:
    [action] = plan(ME, msg("alice", "x" * 500))
    assert action.body.endswith('"' + "x" * 199 + '…"')


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        (RunResult(0, b"", False, 300.0), "run: exit 0\n"),
        (RunResult(3, b"out\nerr\n", False, 300.0), "run: exit 3\nout\nerr\n"),
        (RunResult(-9, b"", False, 300.0), "run: killed by SIGKILL\n"),
        (RunResult(-15, b"bye", False, 300.0), "run: killed by SIGTERM\nbye"),
        (RunResult(None, b"so far\n", False, 300.0), "run: timed out after 300 s\nso far\n"),
        (RunResult(None, b"", False, 1.5), "run: timed out after 1.5 s\n"),
        (RunResult(0, b"x" * OUTPUT_MAX, True, 300.0), "run: exit 0\n" + "x" * OUTPUT_MAX + TRUNCATED),
        (RunResult(0, b"ok \xed\xa0\x80 \xff", False, 300.0), "run: exit 0\nok \ufffd\ufffd\ufffd \ufffd"),
    ],
)
def test_run_reply(result: RunResult, expected: str) -> None:
    assert run_reply(ME, result) == f"[builtin reply from {ME}] {expected}"
    assert TRUNCATED == "\n[… output truncated]"


def test_run_from_an_unverified_web_ui_note_is_refused() -> None:
    """Any local process (the agent's own tools included) can post a note to
    the web UI: only a note verified as the operator's may run a command."""
    from hyperhive.harness.builtin import REFUSED_UNVERIFIED
    from hyperhive.harness.turns import Note

    unverified = Note(0, "operator", "alice", "run id", 0.0, 0.0)
    [refusal] = plan("alice", unverified, shell_allowed=True)
    assert refusal.command is None and REFUSED_UNVERIFIED in refusal.body
    [run] = plan("alice", Note(0, "operator", "alice", "run id", 0.0, 0.0, verified=True), shell_allowed=True)
    assert run.command == "id"
