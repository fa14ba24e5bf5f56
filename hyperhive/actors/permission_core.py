"""Pure rules of tool permission questions (issue 14, item 3).

In ``"permissions": "ask"`` mode the Claude Code CLI asks `hive mcp`'s
``permission`` tool before a tool call it may not run by itself; the daemon
turns that into an operator question (``kind`` "permission") with three
options, and its resolution into the CLI's answer:

- ``allow``: ``{"behavior": "allow", "updatedInput": <the input>}``;
- ``allow <tool> from now on``: the same, and the tool is granted to the agent
  (`Questions` keeps the grants; a granted tool is allowed with no question);
- ``deny``, free text only, a cancel, an expiry (the default is ``deny``):
  ``{"behavior": "deny", "message": …}``, the operator's text as the reason.

The question names the agent and shows what the call would do: a Bash command,
an Edit as a diff, a Write's file and content, any other tool's input as JSON.
`render` is the same for the dashboard (a command in monospace, a diff). What
is shown is what runs: every control, bidi and invisible character escaped
(`safe`: also the blank-looking ones, variation selectors and other spaces than
U+0020), every input key shown (``replace_all``, ``run_in_background``…), and
a call that would not fit whole is denied, never asked (`unshowable`). Review
14c: an input nested deeper than `MAX_DEPTH`, or an edit of more than
`MAX_DIFF_LINES` lines, is denied before anything renders it (the rendering
recurses with the nesting, and a diff costs the square of its lines, on the
Questions actor's one thread).

An agent cannot flood the operator (`admit`): at most `RATE_LIMIT` questions
per agent in `RATE_WINDOW` seconds; past it a call is denied at once.
"""

from __future__ import annotations

import difflib
import json
import re
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any

from hyperhive.actors.questions_core import MAX_QUESTION
from hyperhive.errors import BadRequest

__all__ = [
    "ALLOW",
    "ANNOUNCE_GRACE",
    "KEEP_RESOLVED",
    "MAX_DEPTH",
    "MAX_DIFF_LINES",
    "RATE_LIMIT",
    "RATE_WINDOW",
    "admit",
    "DENY",
    "KIND",
    "behavior",
    "check_tool_name",
    "forever_option",
    "options_for",
    "question_text",
    "render",
    "safe",
    "throttled_message",
    "unshowable",
]

KIND = "permission"
ALLOW = "allow"
DENY = "deny"
MAX_INPUT = 1 << 20  # a tool input's JSON, as the daemon keeps it with the question
MAX_SHOWN = 6000  # of a command, a diff or a content in the question text
RATE_LIMIT = 30  # permission questions per agent in RATE_WINDOW seconds; past it, denied at once
RATE_WINDOW = 60.0
ANNOUNCE_GRACE = 0.5  # a question is published once pending this long (the dashboard: within 1 s)
KEEP_RESOLVED = 200  # resolved permission questions kept per agent; older ones are deleted
MAX_DEPTH = 32  # nesting of a tool input (objects and arrays); deeper is denied unrendered
MAX_DIFF_LINES = 5000  # lines of an Edit's (all of a MultiEdit's) old and new strings; more is denied undiffed
# A Claude Code tool name (Bash, Edit, mcp__server__tool): also a valid --allowedTools rule.
_TOOL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
_EDITS = ("Edit", "MultiEdit")
_EDIT_KEYS = ("file_path", "old_string", "new_string")
# Shown escaped: controls (C0, C1), formats (bidi, zero-width, tags), separators, surrogates, private use.
_HIDDEN = frozenset({"Cc", "Cf", "Cs", "Co", "Zl", "Zp"})
# Also escaped: what renders as nothing, or as a blank, though its category is a visible one
# (default-ignorable marks and letters, variation selectors that can carry a payload
# invisibly, the braille blank); and every space but U+0020 (Zs, below).
_BLANK = frozenset({0x034F, 0x115F, 0x1160, 0x17B4, 0x17B5, 0x2800, 0x3164, 0xFFA0,
                    *range(0x180B, 0x1810), *range(0xFE00, 0xFE10), *range(0xE0100, 0xE01F0)})
_MULTILINE = "\n\t"  # kept in a command, a diff, a content: a person reads lines and tabs
_LIMITS = {"text": MAX_SHOWN, "description": 1000, "file": 1000}  # of each shown string


def check_tool_name(name: object) -> str:
    if not isinstance(name, str) or not _TOOL_NAME.fullmatch(name):
        raise BadRequest("tool_name must be a tool's name (letters, digits, _; at most 128)")
    return name


def forever_option(tool: str) -> str:
    return f"allow {tool} from now on"


def options_for(tool: str) -> list[str]:
    return [ALLOW, forever_option(tool), DENY]


def _cut(text: str, limit: int = MAX_SHOWN) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def safe(text: str, keep: str = "") -> str:
    """``text`` with every control, format (bidi, zero-width, tag) and line/paragraph
    separator character as its escape (``\\x1b``, ``\\u202e``), but those in ``keep``:
    the operator reads the characters that run, in the order they run. A superset
    of `logs.terminal_safe` (also U+061C, U+200B…, U+FEFF, the tag characters)."""
    return "".join(c if c in keep or not _hidden(c) else c.encode("unicode_escape").decode() for c in text)


def _hidden(c: str) -> bool:
    if " " <= c <= "~":
        return False
    cat = unicodedata.category(c)
    return cat in _HIDDEN or (cat == "Zs" and c != " ") or ord(c) in _BLANK


_SPACE_RUN = re.compile(r"[ \t]{8,}")
_LONG_RUN = re.compile(r"[ \t]{32,}")  # in a diff line: code is indented, padding is long


def _visible(text: str) -> str:
    """Whitespace that would push what follows out of sight, shown as its count:
    a run of 8 or more spaces or tabs as ``␠×N``, two or more blank lines as one
    ``⏎×N`` line (``ls`` + 200 newlines + ``curl … | sh`` must not read ``ls``)."""
    out: list[str] = []
    blank = 0
    for line in _SPACE_RUN.sub(lambda m: f"␠×{len(m.group())}", text).split("\n"):
        if not line.strip():
            blank += 1
            continue
        if blank:
            out.append(f"⏎×{blank}" if blank > 1 else "")
            blank = 0
        out.append(line)
    if blank:
        out.append(f"⏎×{blank}" if blank > 1 else "")
    return "\n".join(out)


def _str(inp: Mapping[str, Any], key: str) -> str:
    v = inp.get(key)
    return v if isinstance(v, str) else ""


def _value(v: Any) -> str:
    return safe(json.dumps(v, ensure_ascii=False, sort_keys=True))


def _extras(inp: Mapping[str, Any], rendered: tuple[str, ...], prefix: str = "") -> list[str]:
    """``key: value`` for every key not shown otherwise (a shown key is one of
    ``rendered`` with a string value): ``replace_all``, ``run_in_background``, …"""
    return [f"{prefix}{safe(str(k))}: {_value(v)}" for k, v in sorted(inp.items(), key=lambda kv: str(kv[0]))
            if not (k in rendered and isinstance(v, str))]


def _diff(path: str, old: str, new: str) -> list[str]:
    """The unified diff, every line escaped; a long run of spaces as ``␠×N`` and three or
    more blank lines of one kind in a row as one ``+⏎×N`` line (padding never pushes the
    rest of an edit out of sight)."""
    # split on "\n" only: splitlines also splits on \r, \f, \x1c…, U+2028, which would vanish from the view
    a, b = (f"a{path}", f"b{path}") if path.startswith("/") else (f"a/{path}", f"b/{path}")
    out: list[str] = []
    run: list[str] = []  # blank lines of one kind (" ", "+", "-") in a row
    for raw in difflib.unified_diff(old.split("\n"), new.split("\n"), a, b, lineterm="", n=2):
        line = _LONG_RUN.sub(lambda m: f"␠×{len(m.group())}", safe(raw, _MULTILINE))
        if run and (line[:1] != run[0][:1] or line[1:].strip()):
            out.extend(run if len(run) < 3 else [f"{run[0][:1]}⏎×{len(run)}"])
            run = []
        if line[:1] in (" ", "+", "-") and not line[1:].strip():
            run.append(line)
        else:
            out.append(line)
    out.extend(run if len(run) < 3 else [f"{run[0][:1]}⏎×{len(run)}"])
    return out


def _whole(tool: str, inp: Mapping[str, Any]) -> dict[str, Any]:
    """`render` before any cut (every string already escaped)."""
    if tool == "Bash" and _str(inp, "command"):
        also = "; ".join(_extras(inp, ("command", "description")))
        desc = safe(_str(inp, "description"))
        return {"kind": "command", "text": _visible(safe(_str(inp, "command"), _MULTILINE)),
                "description": " · ".join(p for p in (f"[{also}]" if also else "", desc) if p)}
    if tool in _EDITS and _str(inp, "file_path"):
        path = _str(inp, "file_path")
        edits = inp.get("edits") if tool == "MultiEdit" else [inp]
        listed = tool == "MultiEdit" and isinstance(edits, list)  # then each edit is shown, below
        notes = _extras({k: v for k, v in inp.items() if not (listed and k == "edits")},
                        ("file_path",) if tool == "MultiEdit" else _EDIT_KEYS)
        lines: list[str] = []
        if listed and isinstance(edits, list):
            for i, e in enumerate(edits):
                if isinstance(e, Mapping):
                    notes += _extras(e, ("old_string", "new_string"), f"edits[{i}].")
                    lines += _diff(path, _str(e, "old_string"), _str(e, "new_string"))
                else:
                    notes.append(f"edits[{i}]: {_value(e)}")
        elif tool == "Edit":
            lines = _diff(path, _str(inp, "old_string"), _str(inp, "new_string"))
        return {"kind": "diff", "file": safe(path), "text": "\n".join([*notes, *lines])}
    if tool == "Write" and _str(inp, "file_path"):
        notes = _extras(inp, ("file_path", "content"))
        return {"kind": "content", "file": safe(_str(inp, "file_path")),
                "text": "\n".join([*notes, _visible(safe(_str(inp, "content"), _MULTILINE))])}
    return {"kind": "json", "text": safe(json.dumps(dict(inp), indent=2, ensure_ascii=False, sort_keys=True),
                                         _MULTILINE)}


def render(tool: str, inp: Mapping[str, Any]) -> dict[str, Any]:
    """What the call would do, for a person: ``{"kind": "command"|"diff"|"content"|"json", …}``,
    every string escaped (`safe`) and every input key shown (the ones a kind does
    not render as ``key: value`` lines, in the command's description). Cut only
    where `unshowable` says the call is refused anyway."""
    return {k: _cut(v, _LIMITS.get(k, MAX_SHOWN)) if isinstance(v, str) else v for k, v in _whole(tool, inp).items()}


def _question(agent: str, tool: str, shown: Mapping[str, Any]) -> str:
    if shown["kind"] == "command":
        head = f"`{agent}` wants to run Bash: `{shown['text']}`"
        return head + (f"\n({shown['description']})" if shown["description"] else "")
    if shown["kind"] == "diff":
        return f"`{agent}` wants to edit {shown['file']} ({tool}):\n{shown['text']}"
    if shown["kind"] == "content":
        return f"`{agent}` wants to write {shown['file']} (Write):\n{shown['text']}"
    return f"`{agent}` wants to use {tool}:\n{shown['text']}"


def question_text(agent: str, tool: str, inp: Mapping[str, Any]) -> str:
    """The operator's question: who wants to run what, with what it would do."""
    return _cut(_question(agent, tool, render(tool, inp)), MAX_QUESTION)


def unshowable(tool: str, inp: Mapping[str, Any], agent: str = "a" * 64) -> str | None:
    """Why this call cannot be shown whole (then it is denied, never asked), or None.

    The operator allows what they read: a command, a diff, a file's content, a
    path or a description past what the dashboard and the question text hold
    would be cut, and the part cut off would run unseen. Checked first, before
    anything renders the input: its nesting, and the size of an edit's diff."""
    if _deeper_than(inp, MAX_DEPTH):
        return (f"this {tool} call's input nests deeper than {MAX_DEPTH} levels: it cannot be shown, and is "
                "denied")
    if tool in _EDITS and _diff_lines(inp) > MAX_DIFF_LINES:
        return (f"this {tool} call edits more than {MAX_DIFF_LINES} lines: too long to show the operator whole; "
                "it is denied: make it smaller (smaller edits, or a Write)")
    whole = _whole(tool, inp)
    for key, value in whole.items():
        limit = _LIMITS.get(key, MAX_SHOWN)
        if isinstance(value, str) and len(value) > limit:
            return (f"this {tool} call is too long to show the operator whole ({key}: {len(value)} characters "
                    f"shown, at most {limit}); it is denied: make it smaller (a script file, smaller edits)")
    if len(_question(agent, tool, whole)) > MAX_QUESTION:
        return f"this {tool} call is too long to show the operator whole; it is denied: make it smaller"
    return None


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether ``value`` nests objects/arrays more than ``limit`` deep (no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, Mapping | list):
            if depth > limit:
                return True
            stack.extend((x, depth + 1) for x in (v.values() if isinstance(v, Mapping) else v))
    return False


def _diff_lines(inp: Mapping[str, Any]) -> int:
    """Lines an Edit's (or all of a MultiEdit's) old and new strings hold: what the diff compares."""
    edits = inp.get("edits")
    parts = [inp, *(e for e in edits if isinstance(e, Mapping))] if isinstance(edits, list) else [inp]
    return sum(_str(e, k).count("\n") + 1 for e in parts for k in ("old_string", "new_string"))


def _reason(answer: str, option: str) -> str:
    rest = answer[len(option):]
    return rest[2:].strip() if rest.startswith(", ") else ""


def behavior(tool: str, inp: Mapping[str, Any], answer: str, how: str) -> tuple[dict[str, Any], bool]:
    """The CLI's answer for a resolved question, and whether the tool is now granted.

    ``answer`` is what `questions_core.merge_answer` made of the operator's
    choice and text (``"deny, too risky"``); an expiry answers the default ``deny``.
    """
    if how == "answered":
        hidden = unshowable(tool, inp)
        if hidden is not None:  # never allow what the operator could not read whole
            return {"behavior": "deny", "message": hidden}, False
        for option, grant in ((forever_option(tool), True), (ALLOW, False)):
            if answer == option or answer.startswith(option + ", "):
                return {"behavior": "allow", "updatedInput": dict(inp)}, grant
        reason = _reason(answer, DENY) if answer == DENY or answer.startswith(DENY + ", ") else answer.strip()
        message = f"the operator denied this {tool} call" + (f": {reason}" if reason else "")
    elif how == "expired":
        message = f"the operator did not answer in time; this {tool} call is denied"
    else:
        message = f"the question about this {tool} call was cancelled; it is denied"
    return {"behavior": "deny", "message": message}, False


def admit(recent: Sequence[float], now: float, limit: int = RATE_LIMIT,
          window: float = RATE_WINDOW) -> tuple[list[float], bool]:
    """The sliding window of one agent's questions: the times still in it (with
    ``now`` when admitted) and whether a new question may be asked. A refused
    call does not count: the window empties by itself."""
    kept = [t for t in recent if now - t < window]
    if len(kept) >= limit:
        return kept, False
    return [*kept, now], True


def throttled_message(tool: str, limit: int = RATE_LIMIT, window: float = RATE_WINDOW) -> str:
    return (f"too many tool questions: at most {limit} in {window:g} s per agent; this {tool} call is denied "
            "without asking the operator (wait, or ask for fewer calls)")
