"""Who may use the dashboard (F46).

Loopback by default. Any other listen address needs an operator token (a
file: ``--token-file`` or ``$HYPERHIVE_TOKEN_FILE``, as the NixOS module
hands it over); without one the daemon refuses to start. With a token every
request must carry it: ``?token=`` once (it is then kept in an HttpOnly
cookie), the cookie, or ``Authorization: Bearer`` (for scrapers). Every POST
also carries Tornado's XSRF token.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import socket
from pathlib import Path
from typing import Any

from hyperhive.errors import BadRequest

__all__ = ["TOKEN_COOKIE", "is_loopback", "load_token", "request_token_ok"]

TOKEN_COOKIE = "hive_token"
MIN_TOKEN = 16


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``; a wildcard is not loopback."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:  # a host name: loopback only if every address it resolves to is
            infos = socket.getaddrinfo(host, None)
        except OSError:
            return False
        return bool(infos) and all(ipaddress.ip_address(i[4][0]).is_loopback for i in infos)


def load_token(listen_host: str, token_file: str) -> str | None:
    """The operator token, or None on loopback without one. Raises BadRequest
    (the daemon then refuses to start) for a non-loopback address with no
    token, or a token file that is missing, unreadable or too short."""
    path = token_file or os.environ.get("HYPERHIVE_TOKEN_FILE", "")
    if not path:
        if not is_loopback(listen_host):
            raise BadRequest(
                f"the dashboard would listen on {listen_host}, which is not loopback: "
                f"give --token-file (the operator token) or listen on 127.0.0.1")
        return None
    try:
        token = Path(path).read_text().strip()
    except OSError as exc:
        raise BadRequest(f"cannot read the token file {path}: {exc.strerror}") from None
    if len(token) < MIN_TOKEN:
        raise BadRequest(f"the token in {path} is shorter than {MIN_TOKEN} characters")
    return token


def request_token_ok(handler: Any, token: str | None) -> bool:
    """Check a request's token; remember one given as ``?token=`` in a cookie."""
    if token is None:
        return True
    given = handler.get_query_argument("token", None)
    if given is not None and hmac.compare_digest(given.encode(), token.encode()):
        handler.set_cookie(TOKEN_COOKIE, given, httponly=True, samesite="Strict")
        return True
    cookie = handler.get_cookie(TOKEN_COOKIE)
    if cookie is not None and hmac.compare_digest(cookie.encode(), token.encode()):
        return True
    auth = handler.request.headers.get("Authorization", "")
    return auth.startswith("Bearer ") and hmac.compare_digest(auth[7:].encode(), token.encode())
