"""Pure rules of operator questions (F7–F10, F43): what may be asked, how an
answer is merged, what an expiry answers, and the countdown chip's text."""

from __future__ import annotations

import json
from typing import Any, Literal

from hyperhive.errors import BadRequest
from hyperhive.texts import span_text

__all__ = [
    "CANCELLED",
    "EXPIRED",
    "How",
    "countdown_chip",
    "expiry_answer",
    "merge_answer",
    "operator_answered",
    "validate_ask",
]

How = Literal["answered", "cancelled", "expired"]
CANCELLED = "[cancelled]"
EXPIRED = "[expired]"
MAX_QUESTION = 8000
MAX_OPTIONS = 32
MAX_OPTION = 500
MAX_TTL = 7 * 24 * 3600.0


def validate_ask(
    question: str, options: list[str], multi: bool, ttl_seconds: float | None, default: str | None,
) -> None:
    """Raise BadRequest for a question the dashboard could not show sensibly."""
    if not question.strip():
        raise BadRequest("question must not be empty")
    if len(question) > MAX_QUESTION:
        raise BadRequest(f"question is over {MAX_QUESTION} characters")
    if len(options) > MAX_OPTIONS:
        raise BadRequest(f"at most {MAX_OPTIONS} options, got {len(options)}")
    for o in options:
        if not o.strip() or len(o) > MAX_OPTION:
            raise BadRequest(f"each option must be 1 to {MAX_OPTION} characters and not blank")
    if len(set(options)) != len(options):
        raise BadRequest("options must be distinct")
    if multi and not options:
        raise BadRequest("multi needs options")
    if ttl_seconds is not None and not (0 < ttl_seconds <= MAX_TTL):
        raise BadRequest(f"ttl_seconds must be > 0 and <= {MAX_TTL:g}, got {ttl_seconds}")
    if default is not None and not default.strip():
        raise BadRequest("default must not be blank (leave it out for no default)")
    if default is not None and ttl_seconds is None:
        raise BadRequest("default only applies with ttl_seconds (it is the answer on expiry)")


def merge_answer(options: list[str], multi: bool, chosen: list[str], text: str) -> str:
    """F8: the checked options (in the question's order) and the free text, joined with ', '."""
    unknown = [c for c in chosen if c not in options]
    if unknown:
        raise BadRequest(f"not an option of this question: {', '.join(map(repr, unknown))}")
    if not multi and len(set(chosen)) > 1:
        raise BadRequest("this question takes one option (multi is false)")
    picked = [o for o in options if o in set(chosen)]
    parts = [*picked, *([text.strip()] if text.strip() else [])]
    if not parts:
        raise BadRequest("an answer needs a checked option or some text")
    return ", ".join(parts)


def expiry_answer(default: str | None) -> str:
    """F43: silence is consent only when the asker chose a default."""
    return default if default is not None else EXPIRED


def operator_answered(qid: int, question: str, answer: str, how: How) -> dict[str, Any]:
    return {"event": "OperatorAnswered", "id": qid, "question": question, "answer": answer, "how": how}


def options_of(raw: str | None) -> list[str]:
    try:
        value = json.loads(raw or "[]")
    except ValueError:
        return []
    return [str(v) for v in value] if isinstance(value, list) else []


def countdown_chip(seconds_left: float) -> str:
    """F10's chip: ``⏳ 42s``, ``⏳ 3m 5s``, ``⏳ 1h 2m``."""
    return f"⏳ {span_text(seconds_left, largest='h')}"
