"""Whether the ray backend can be had here, without importing Ray (issue 18).

Ray is an optional extra (``pip install 'hyperhive[ray]'``); nothing outside
``hyperhive/backends/ray_*.py`` imports it, and those only when
``--backend ray`` asks for them. `ray_missing` is what ``hive serve --backend
ray`` checks first: the one line to print (and exit 1) when Ray is absent.
"""

from __future__ import annotations

import importlib.util

__all__ = ["RAY_VERSION", "ray_missing"]

RAY_VERSION = "2.60.0"  # the extra pins it: what the tests run against


def ray_missing() -> str | None:
    """How to install Ray when it cannot be imported here; None when it can."""
    hint = f"install it with: pip install 'hyperhive[ray]' (ray=={RAY_VERSION})"
    try:
        found = importlib.util.find_spec("ray") is not None
    except (ImportError, ValueError):
        found = False
    return None if found else f"--backend ray needs Ray, which is not installed; {hint}"
