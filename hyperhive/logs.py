"""structlog set up with stdlib loggers (tornado, pykka, peewee) routed through
the same chain, in one of two formats:

- ``json``: one JSON object per line (event, level, timestamp, …), what
  journald and the tests read; the harness and `hive mcp` always write it;
- ``console``: readable lines (structlog's ConsoleRenderer) for a person at
  a terminal.

`hive serve --log-format auto` (the default) picks console on a terminal and
json under systemd (``JOURNAL_STREAM`` or ``INVOCATION_ID`` set) or when the
log goes to a file or pipe (`choose_format`).
"""

from __future__ import annotations

import io
import logging
import os
import re
import sys
from collections.abc import Mapping
from typing import IO, Any

import structlog

__all__ = ["FORMATS", "bind_thread", "choose_format", "configure", "get", "terminal_safe"]

FORMATS = ("auto", "console", "json")
_SYSTEMD_VARS = ("JOURNAL_STREAM", "INVOCATION_ID")  # set by systemd for a service's process


def choose_format(choice: str, stream: IO[str] | None = None, env: Mapping[str, str] | None = None) -> str:
    """``console`` or ``json``: ``choice`` itself unless it is ``auto``."""
    if choice not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, got {choice!r}")
    if choice != "auto":
        return choice
    env = os.environ if env is None else env
    if any(env.get(v) for v in _SYSTEMD_VARS):
        return "json"
    isatty = getattr(stream or sys.stdout, "isatty", None)
    return "console" if isatty is not None and isatty() else "json"


def _shared(fmt: str) -> list[Any]:
    stamp = (structlog.processors.TimeStamper(fmt="%Y-%m-%d %H:%M:%S", utc=False) if fmt == "console"
             else structlog.processors.TimeStamper(fmt="iso", utc=True))
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.ExtraAdder(),
        stamp,
    ]


# What must never reach a terminal raw: C0/C1 controls (ESC starts OSC 52 clipboard
# writes, title changes, cursor moves that erase or forge lines) and the format
# characters that reorder text. Log values carry agent-chosen strings (a refused
# request's id, a name): JSON escapes them; the console renderer would not.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def terminal_safe(text: str, keep: str = "") -> str:
    """``text`` with every control and bidi character as its escape (``\\x1b``), but those in ``keep``."""
    return _UNSAFE.sub(lambda m: m.group() if m.group() in keep else m.group().encode("unicode_escape").decode(), text)


def _escape_for_terminal(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    return {k: terminal_safe(v) if isinstance(v, str) else v for k, v in event.items()}


def _safe_traceback(sio: IO[str], exc_info: Any) -> None:
    buf = io.StringIO()
    structlog.dev.plain_traceback(buf, exc_info)
    sio.write(terminal_safe(buf.getvalue(), keep="\n"))


def _renderers(fmt: str, stream: IO[str]) -> list[Any]:
    if fmt == "console":  # renders exc_info itself, as a readable traceback
        isatty = getattr(stream, "isatty", None)
        # Keys in the order the event gives them: `daemon.ready url=… agents=N`.
        return [_escape_for_terminal,
                structlog.dev.ConsoleRenderer(colors=bool(isatty and isatty()), sort_keys=False,
                                              exception_formatter=_safe_traceback)]
    return [
        structlog.processors.ExceptionRenderer(structlog.tracebacks.ExceptionDictTransformer(show_locals=False)),
        structlog.processors.JSONRenderer(),
    ]


def configure(stream: IO[str] | None = None, level: int = logging.INFO, fmt: str = "json") -> str:
    """Route every log record to ``stream`` (default stdout) in ``fmt``
    (``auto`` chosen by `choose_format`); returns the format used.

    `hive mcp` passes stderr: its stdout is the MCP protocol.
    """
    out = stream or sys.stdout
    fmt = choose_format(fmt, out)
    shared = _shared(fmt)
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *_renderers(fmt, out)],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # pykka logs every failed ask at INFO with a traceback; the caller already got it.
    logging.getLogger("pykka").setLevel(logging.WARNING)
    logging.getLogger("peewee").setLevel(logging.WARNING)
    return fmt


def get(name: str) -> Any:
    return structlog.stdlib.get_logger(name)


def bind_thread(**context: Any) -> None:
    """Bind context for every later log line on this thread (an actor's on_start)."""
    structlog.contextvars.bind_contextvars(**context)
