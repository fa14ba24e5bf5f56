"""Badges (F19): what an operator must do for an agent.

- ``needs-login``: the claude driver's credentials file is absent (only that
  driver logs in).
- ``needs-update``: the agent's config changed after the container was built
  from it: the newest file in ``agents/<name>/config/`` is newer than the
  newest in ``applied/<name>/``. Dot entries (the config's ``.git``) are not
  config; a copy that keeps mtimes (``copy2``) or a fresh write both count as
  applied.
"""

from __future__ import annotations

import os
from pathlib import Path

from hyperhive.harness.claude import has_credentials
from hyperhive.names import AgentName
from hyperhive.paths import StatePaths

__all__ = ["NEEDS_LOGIN", "NEEDS_UPDATE", "agent_badges", "compute_badges", "newest_file_mtime"]

NEEDS_LOGIN = "needs-login"
NEEDS_UPDATE = "needs-update"
LOGIN_DRIVERS = frozenset({"claude"})


def compute_badges(
    driver: str, has_credentials: bool, config_mtime: float | None, applied_mtime: float | None
) -> list[str]:
    """The badges for one agent from what was observed (a pure function)."""
    out: list[str] = []
    if driver in LOGIN_DRIVERS and not has_credentials:
        out.append(NEEDS_LOGIN)
    if config_mtime is not None and (applied_mtime is None or config_mtime > applied_mtime):
        out.append(NEEDS_UPDATE)
    return out


def newest_file_mtime(directory: Path) -> float | None:
    """The newest mtime among the regular files directly in ``directory``
    (dot entries skipped); None when there are none."""
    try:
        entries = list(directory.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return None
    mtimes = [e.stat().st_mtime for e in entries
              if not e.name.startswith(".") and e.is_file() and not e.is_symlink()]
    return max(mtimes, default=None)


def agent_badges(paths: StatePaths, name: AgentName, driver: str) -> list[str]:
    """Observe one agent's files and compute its badges."""
    return compute_badges(
        driver,
        # The same rule as the harness's own page: a key in the daemon's environment
        # (passed down to the CLI) counts as a login too.
        has_credentials(paths.state(name), os.environ),
        newest_file_mtime(paths.config_dir(name)),
        newest_file_mtime(paths.applied(name)),
    )
