"""Where the model API gateway sends an agent's requests, and with what
credential: the daemon's one fixed `Upstream` (from its own environment) and
`upstream_url`, which keeps only the path and query of a request target, so
an agent can never pick the host its request (and the daemon's credential)
goes to. Pure.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

__all__ = ["DEFAULT_BASE_URL", "Upstream", "upstream_from_env", "upstream_url"]

DEFAULT_BASE_URL = "https://api.anthropic.com"
_ABSOLUTE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*")


def _check_base_url(url: str) -> str:
    url = url.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"upstream URL {url!r}: the scheme must be http or https")
    if not parts.hostname:
        raise ValueError(f"upstream URL {url!r} has no host")
    if parts.username is not None or parts.password is not None:
        raise ValueError("the upstream URL must not carry a user or password; use ANTHROPIC_API_KEY")
    if parts.query or parts.fragment or "#" in url:
        raise ValueError(f"upstream URL {url!r}: no query or fragment")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as err:
        raise ValueError(f"upstream URL {url!r}: {err}") from None
    return url


@dataclass(frozen=True)
class Upstream:
    """Where every agent's model requests go, and the credential they carry."""

    base_url: str  # no trailing slash
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)  # never in a repr: a secret

    def __post_init__(self) -> None:
        object.__setattr__(self, "base_url", _check_base_url(self.base_url))

    @property
    def holds_credential(self) -> bool:
        return bool(self.headers)


def upstream_from_env(env: Mapping[str, str]) -> Upstream:
    """The daemon's upstream from its own environment: ``ANTHROPIC_BASE_URL``
    (default the public API) and ``ANTHROPIC_API_KEY`` (→ ``x-api-key``) or
    else ``ANTHROPIC_AUTH_TOKEN`` (→ ``Authorization: Bearer``). ValueError on
    a bad URL."""
    base = env.get("ANTHROPIC_BASE_URL") or DEFAULT_BASE_URL
    headers: dict[str, str] = {}
    if key := env.get("ANTHROPIC_API_KEY", "").strip():
        headers["x-api-key"] = key
    elif token := env.get("ANTHROPIC_AUTH_TOKEN", "").strip():
        headers["authorization"] = f"Bearer {token}"
    return Upstream(base, headers)


def upstream_url(base_url: str, uri: str) -> str:
    """``base_url`` + the path and query of the request target ``uri``.

    An absolute-form target keeps only its path; ``//host/x`` stays a path.
    ValueError if the result would name any other host than ``base_url``.
    """
    if not uri.startswith("/"):
        m = _ABSOLUTE.match(uri)
        if m is None:
            raise ValueError("the request target is neither a path nor an absolute URL")
        uri = uri[m.end():]
        if not uri.startswith("/"):
            uri = "/" + uri
    if any(c in uri for c in " \r\n\t\0\\#"):
        raise ValueError("the request target holds a character not allowed in a path")
    url = base_url + uri
    want, got = urlsplit(base_url), urlsplit(url)
    if (got.scheme, got.netloc) != (want.scheme, want.netloc):
        raise ValueError("the request target would change the upstream host")
    return url
