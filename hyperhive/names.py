"""Agent names: the one check every name passes before it touches a path,
a command line or the database."""

from __future__ import annotations

import re
from pathlib import Path
from typing import NewType

from hyperhive.errors import BadName

__all__ = [
    "MANAGER",
    "OPERATOR",
    "RESERVED",
    "SYSTEM",
    "AgentName",
    "agent_dir",
    "is_valid_name",
    "validate_name",
    "validate_recipient",
    "validate_spawnable",
]

AgentName = NewType("AgentName", str)

NAME_RE = re.compile(r"[a-z][a-z0-9-]{0,30}")
MANAGER = AgentName("m1nd")
OPERATOR = "operator"
SYSTEM = "system"
# Names that address someone but are never containers.
RESERVED = frozenset({OPERATOR, SYSTEM})


def is_valid_name(name: object) -> bool:
    return isinstance(name, str) and NAME_RE.fullmatch(name) is not None


def validate_name(name: object) -> AgentName:
    """Return ``name`` as an AgentName, or raise BadName saying why."""
    if not isinstance(name, str):
        raise BadName(f"agent name must be a string, got {type(name).__name__}")
    if not is_valid_name(name):
        raise BadName(
            f"bad agent name {name!r}: must match ^[a-z][a-z0-9-]{{0,30}}$ "
            "(lowercase letter first, then up to 30 of a-z, 0-9, -)"
        )
    return AgentName(name)


def validate_spawnable(name: object) -> AgentName:
    """A name a container may take: valid and not reserved."""
    agent = validate_name(name)
    if agent in RESERVED:
        raise BadName(f"{agent!r} is reserved and cannot be an agent")
    return agent


def validate_recipient(name: object) -> str:
    """A recipient is an agent name or the operator."""
    return validate_name(name)


def agent_dir(root: Path, name: AgentName) -> Path:
    """``root/name``, checked to stay inside ``root`` even through symlinks."""
    base = root.resolve()
    path = (base / validate_name(name)).resolve()
    if path.parent != base:
        raise BadName(f"agent name {name!r} escapes {root}")
    return path
