"""Badges (F19): what an operator must do for an agent, or must know about it.

- ``needs-login``: the claude driver (only that driver logs in) has no login:
  no credential key in the daemon's environment (passed down to the CLI) and
  no credentials file in the agent's state dir. The file is looked for
  without following a single link (``sandbox.safefs``): the agent owns
  ``state/``, and ``.claude -> /root/.claude`` or ``.credentials.json ->
  /etc/shadow`` would otherwise make a host file count as its login (the
  daemon often runs as root). A link counts as no login.
- ``needs-update``: the agent's config changed after the container was built
  from it: the newest file in ``agents/<name>/config/`` is newer than the
  newest in ``applied/<name>/``. Dot entries (the config's ``.git``) are not
  config; a copy that keeps mtimes (``copy2``) or a fresh write both count as
  applied.
- ``unsandboxed``: the backend could not sandbox the agent (``--sandbox off``,
  bwrap missing): it runs with the daemon's own view of the host.
- ``over-budget`` (issue 15): the agent, or the fleet, is over its budget: it
  starts no turn (its messages wait) until the operator raises it. Not a file
  fact: it comes from the spend table's view, on the IOLoop (`spend_badges`),
  so it is added where the rows are built, never cached with the others.

One rule for every surface (the dashboard's cache, ``hive ls``):
``agent_badges`` joins the paths of a name without resolving them (resolving
every path for containment cost ~0.2 ms per agent, 200 ms of a 1000-agent
state); the name rule (a regex) keeps the joins inside ``agents/``, and the
walk into the agent's own state takes single components only.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hyperhive.errors import BadName
from hyperhive.harness.claude_cmdline import CREDENTIAL_ENV
from hyperhive.names import is_valid_name
from hyperhive.paths import StatePaths
from hyperhive.tombstones import credentials_stored

__all__ = [
    "LOGIN_DRIVERS",
    "NEEDS_LOGIN",
    "NEEDS_UPDATE",
    "OVER_BUDGET",
    "UNSANDBOXED",
    "agent_badges",
    "badge_key",
    "compute_badges",
    "env_login",
    "newest_file_mtime",
    "spend_badges",
]

NEEDS_LOGIN = "needs-login"
NEEDS_UPDATE = "needs-update"
UNSANDBOXED = "unsandboxed"
OVER_BUDGET = "over-budget"
LOGIN_DRIVERS = frozenset({"claude"})


def compute_badges(
    driver: str, has_credentials: bool, config_mtime: float | None, applied_mtime: float | None,
    sandboxed: bool = True,
) -> list[str]:
    """The badges for one agent from what was observed (a pure function)."""
    out: list[str] = []
    if driver in LOGIN_DRIVERS and not has_credentials:
        out.append(NEEDS_LOGIN)
    if config_mtime is not None and (applied_mtime is None or config_mtime > applied_mtime):
        out.append(NEEDS_UPDATE)
    if not sandboxed:
        out.append(UNSANDBOXED)
    return out


def spend_badges(view: Mapping[str, Any] | None) -> list[str]:
    """``over-budget`` when the spend table's view of the agent says it may start
    no turn (its budget or the fleet's, ``Spend.view``'s ``over_budget``)."""
    return [OVER_BUDGET] if view and view.get("over_budget") else []


def env_login(env: Mapping[str, str] | None = None) -> bool:
    """A credential key in the environment (the daemon's by default) counts as a
    login: the same keys the claude driver's ``has_credentials`` honours."""
    env = os.environ if env is None else env
    return any(env.get(k) for k in CREDENTIAL_ENV)


def newest_file_mtime(directory: Path) -> float | None:
    """The newest mtime among the regular files directly in ``directory``
    (dot entries and links skipped, nothing followed); None when there are none."""
    newest: float | None = None
    try:
        with os.scandir(directory) as it:
            for e in it:
                if e.name.startswith(".") or not e.is_file(follow_symlinks=False):
                    continue
                try:
                    mtime = e.stat(follow_symlinks=False).st_mtime
                except FileNotFoundError:  # removed while we looked
                    continue
                newest = mtime if newest is None else max(newest, mtime)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return newest


def badge_key(driver: object, sandboxed: object, logged_in_by_env: bool) -> tuple[str, bool, bool]:
    """What an agent's badges depend on besides its files, as ``agent_badges``
    takes it (a cache's key: a change of driver, sandbox or login recomputes)."""
    return str(driver or ""), bool(sandboxed), logged_in_by_env


def agent_badges(paths: StatePaths, name: str, driver: str, *, sandboxed: bool = True,
                 logged_in_by_env: bool | None = None) -> list[str]:
    """Observe one agent's files and compute its badges. ``logged_in_by_env``
    is ``env_login()`` (computed once for many agents by the caller, else here)."""
    if not is_valid_name(name):
        raise BadName(f"bad agent name {name!r}")
    login = False
    if driver in LOGIN_DRIVERS:
        login = (env_login() if logged_in_by_env is None else logged_in_by_env) \
            or credentials_stored(paths.agents, name)
    return compute_badges(
        driver, login,
        newest_file_mtime(paths.agents / name / "config"),  # daemon-owned, like applied/
        newest_file_mtime(paths.applied_root / name),
        sandboxed,
    )
