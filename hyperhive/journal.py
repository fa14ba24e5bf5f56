"""Container logs (F23): the checks every journal request passes, and reading
the tail of a log file from its end.

The name is checked against the live containers before anything runs; the
unit is whitelisted ("harness", or "" for the whole machine), so a request
cannot be turned to another unit; lines are capped at 5000.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from pathlib import Path

from hyperhive.errors import BadRequest, UnknownAgent
from hyperhive.names import AgentName, validate_name

__all__ = ["JOURNAL_DEFAULT_LINES", "JOURNAL_MAX_LINES", "JOURNAL_UNITS", "check_journal_request",
           "check_unit_and_lines", "tail_lines"]

JOURNAL_MAX_LINES = 5000
JOURNAL_DEFAULT_LINES = 200
JOURNAL_UNITS = ("harness", "")  # the harness service, or the whole machine
_BLOCK = 64 * 1024


def check_unit_and_lines(unit: object, lines: object) -> tuple[str, int]:
    """The unit, whitelisted, and the line count, capped at JOURNAL_MAX_LINES."""
    if not isinstance(unit, str) or unit not in JOURNAL_UNITS:
        raise BadRequest(f"unit must be 'harness' or '' (the whole machine), got {unit!r}")
    if isinstance(lines, bool) or not isinstance(lines, int) or lines < 1:
        raise BadRequest(f"lines must be a positive integer, got {lines!r}")
    return unit, min(lines, JOURNAL_MAX_LINES)


def check_journal_request(
    name: object, unit: object, lines: object, live_names: Collection[str]
) -> tuple[AgentName, str, int]:
    """Validate a journal request: a valid name of a live container first, then
    the unit and the line cap."""
    agent = validate_name(name)
    if agent not in live_names:
        raise UnknownAgent(f"no container named {agent!r}")
    checked_unit, capped = check_unit_and_lines(unit, lines)
    return agent, checked_unit, capped


def tail_lines(path: Path, lines: int) -> str:
    """The last ``lines`` lines of ``path`` ("" when it does not exist yet).

    Reads backwards in 64 KiB blocks until it has enough newlines, so a large
    log costs about what is returned, not the whole file. Bytes that are not
    UTF-8 are replaced, never fatal.
    """
    if lines < 1:
        return ""
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        return ""
    with f:
        end = f.seek(0, os.SEEK_END)
        pos = end
        chunks: list[bytes] = []
        newlines = 0
        # A final newline ends the last line; it does not start another one.
        want = lines + 1
        while pos > 0 and newlines < want:
            size = min(_BLOCK, pos)
            pos -= size
            f.seek(pos)
            block = f.read(size)
            chunks.append(block)
            newlines += block.count(b"\n")
    data = b"".join(reversed(chunks))
    text = data.decode("utf-8", errors="replace")
    body = text[:-1] if text.endswith("\n") else text
    kept = body.split("\n")[-lines:] if body else []
    return "\n".join(kept) + ("\n" if kept else "")
