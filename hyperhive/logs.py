"""structlog set up to write one JSON object per line, with stdlib loggers
(tornado, pykka, peewee) routed through the same chain."""

from __future__ import annotations

import logging
import sys
from typing import IO, Any

import structlog

__all__ = ["bind_thread", "configure", "get"]

_SHARED: list[Any] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.stdlib.ExtraAdder(),
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


def configure(stream: IO[str] | None = None, level: int = logging.INFO) -> None:
    """Route every log record to ``stream`` (default stdout) as JSON lines.

    `hive mcp` passes stderr: its stdout is the MCP protocol.
    """
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *_SHARED,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_SHARED,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
            ),
            structlog.processors.JSONRenderer(),
        ],
    )
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # pykka logs every failed ask at INFO with a traceback; the caller already got it.
    logging.getLogger("pykka").setLevel(logging.WARNING)
    logging.getLogger("peewee").setLevel(logging.WARNING)


def get(name: str) -> Any:
    return structlog.stdlib.get_logger(name)


def bind_thread(**context: Any) -> None:
    """Bind context for every later log line on this thread (an actor's on_start)."""
    structlog.contextvars.bind_contextvars(**context)
