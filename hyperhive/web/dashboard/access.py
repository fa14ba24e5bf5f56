"""Who may use the dashboard and the agents' web UIs (F46, issue 12).

One secret, the operator token, guards every surface on every address,
loopback included: the ``token_file`` setting (``--token-file`` or
``$HYPERHIVE_TOKEN_FILE``; required for a listen address that is not
loopback), else ``run/operator.token``, made on first start (0600, 32 random
bytes) and kept. Rotate it by deleting the file and restarting: every
session ends with it.

A request proves it knows the token in one of two ways:
- ``Authorization: Bearer <token>`` (scrapers, scripts). No browser sends
  that header on its own, so such a request needs no XSRF token.
- the session cookie ``hive_session`` that ``GET /login?token=…`` (or
  ``/?token=…``) sets: HttpOnly, SameSite=Strict, ``v1.<issued>.<random>.<mac>``
  signed with HMAC(token), valid for `SESSION_DAYS`. Nothing is kept server
  side, so a restart keeps sessions and a new token ends them all.

Cookies ignore ports: every page on any 127.0.0.1 port (an agent's own UI
among them) shares the browser's cookies for 127.0.0.1, may read and plant
every cookie that is not HttpOnly, and counts as *same-site*. Hence:
- the XSRF token is never a cookie: it is HMAC(token, session id), put into
  the dashboard page itself (which another origin cannot read) and checked
  against the session of the request (`Access.xsrf_ok`);
- a request carrying several ``hive_session`` cookies (one planted beside the
  operator's) is judged by any of them that verifies;
- requests another site or port started (``Sec-Fetch-Site`` same-site or
  cross-site) are refused unless they are top-level GET navigations (the
  link from the dashboard to an agent's UI is one);
- ``Host`` must be one of the names the server answers to (no DNS
  rebinding), and ``Origin``, where the browser sends one, the server's own.

This module is pure (no Tornado): the dashboard (`dash_handlers.Base`,
`push.PushSocket`) and the agents' web relay (`sandbox.endpoints`) both use it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import os
import secrets
import socket
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from hyperhive.errors import BadTokenFile

__all__ = [
    "SESSION_COOKIE",
    "TOKEN_FILE",
    "URL_FILE",
    "Access",
    "Auth",
    "allowed_hosts",
    "cookie_values",
    "fetch_allowed",
    "host_ok",
    "is_loopback",
    "load_token",
    "login_url",
    "origin_ok",
    "session_cookie_header",
    "strip_cookie",
    "write_private",
]

SESSION_COOKIE = "hive_session"
TOKEN_FILE = "operator.token"  # in run/, when no --token-file is given
URL_FILE = "dashboard.url"  # in run/: the login URL (it carries the token), 0600
MIN_TOKEN = 16
SESSION_DAYS = 30
_SESSION_SECONDS = SESSION_DAYS * 86400


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


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically, mode 0600 from the start."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _read_nofollow(path: Path) -> str:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if st.st_mode & 0o077 and st.st_uid == os.geteuid():
            os.fchmod(fd, 0o600)  # ours and readable by others: not any more
        return os.read(fd, 4096).decode().strip()
    finally:
        os.close(fd)


def load_token(listen_host: str, token_file: str, run_dir: Path | None = None) -> str | None:
    """The operator token. From ``token_file`` (the setting: the flag, else
    ``$HYPERHIVE_TOKEN_FILE``) when given; else ``run_dir/operator.token``,
    made on first start (None without a ``run_dir``: the daemon checks the
    setting before it takes its lock, and reads its own file after). Raises
    BadTokenFile (the daemon then refuses to start, one line) for a
    non-loopback address without a token file given, or a token file that is
    missing, unreadable or too short."""
    path = token_file
    if not path:
        if not is_loopback(listen_host):
            raise BadTokenFile(
                f"the dashboard would listen on {listen_host}, which is not loopback: "
                f"give --token-file (the operator token) or listen on 127.0.0.1")
        if run_dir is None:
            return None
        own = run_dir / TOKEN_FILE
        if not own.exists() and not own.is_symlink():
            run_dir.mkdir(parents=True, exist_ok=True)
            write_private(own, secrets.token_urlsafe(32) + "\n")
        path = str(own)
    try:
        token = _read_nofollow(Path(path))
    except OSError as exc:
        raise BadTokenFile(f"cannot read the token file {path}: {exc.strerror}") from None
    if len(token) < MIN_TOKEN:
        raise BadTokenFile(f"the token in {path} is shorter than {MIN_TOKEN} characters")
    return token


def login_url(listen_host: str, port: int, token: str) -> str:
    """The URL that logs a browser in; a wildcard address is reached on 127.0.0.1."""
    host = listen_host
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/login?token={token}"


# --- Host and Origin ------------------------------------------------------------

def allowed_hosts(listen_host: str, port: int, extra: Iterable[str] = ()) -> frozenset[str]:
    """Every ``Host`` value the server answers to (lower case): the listen
    address, ``localhost`` and ``127.0.0.1``, each bare and with ``port``,
    and the operator's ``--allowed-host`` names (bare ones also with ``port``;
    one with a port of its own, as a reverse proxy sends it, as given)."""
    names = {"localhost", "127.0.0.1"}
    if listen_host not in ("", "0.0.0.0", "::"):
        names.add(f"[{listen_host}]" if ":" in listen_host else listen_host)
    out: set[str] = set()
    for n in names:
        out |= {n.lower(), f"{n.lower()}:{port}"}
    for e in extra:
        e = e.strip().lower()
        if not e:
            continue
        out.add(e)
        if not _has_port(e):
            out.add(f"{e}:{port}")
    return frozenset(out)


def _has_port(host: str) -> bool:
    if host.startswith("["):
        return "]:" in host
    return ":" in host


def host_ok(host: str | None, allowed: frozenset[str]) -> bool:
    return host is not None and host.strip().lower() in allowed


def origin_ok(origin: str, host: str) -> bool:
    """``origin`` is exactly the origin of a page served as ``host``."""
    o = origin.strip().lower()
    h = host.strip().lower()
    return o in (f"http://{h}", f"https://{h}")


def fetch_allowed(headers: Mapping[str, str], method: str) -> bool:
    """Fetch metadata (what browsers send): only the server's own pages, the
    operator's typing, and top-level GET navigations from elsewhere. A
    request without it (a script, an older browser) is judged by the rest."""
    site = headers.get("Sec-Fetch-Site")
    if site is None or site in ("same-origin", "none"):
        return True
    return (method in ("GET", "HEAD") and headers.get("Sec-Fetch-Mode") == "navigate"
            and headers.get("Sec-Fetch-Dest", "document") == "document")


# --- sessions -----------------------------------------------------------------------

def cookie_values(header: str, name: str) -> list[str]:
    """Every value of cookie ``name`` in a ``Cookie`` header (duplicates kept)."""
    out = []
    for part in header.split(";"):
        k, sep, v = part.strip().partition("=")
        if sep and k == name:
            out.append(v.strip().strip('"'))
    return out


def strip_cookie(header: str, name: str) -> str:
    """The ``Cookie`` header without any cookie called ``name``."""
    kept = [p.strip() for p in header.split(";") if p.strip() and p.strip().partition("=")[0] != name]
    return "; ".join(kept)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@dataclass(frozen=True)
class Auth:
    """How a request proved it knows the token: ``bearer``, or ``session`` (sid)."""

    how: str
    sid: str = ""

    @property
    def is_session(self) -> bool:
        return self.how == "session"


class Access:
    """The operator token and what is derived from it (thread-safe: immutable)."""

    def __init__(self, token: str) -> None:
        self._token = token.encode()

    def _mac(self, purpose: str, value: str) -> str:
        return _b64(hmac.new(self._token, f"{purpose}\0{value}".encode(), hashlib.sha256).digest())

    def token_ok(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), self._token)

    def bearer_ok(self, authorization: str | None) -> bool:
        if not authorization or not authorization.startswith("Bearer "):
            return False
        return self.token_ok(authorization[7:].strip())

    def new_session(self, now: float | None = None) -> str:
        """A fresh session cookie value."""
        sid = f"{int(now if now is not None else time.time())}.{secrets.token_urlsafe(18)}"
        return f"v1.{sid}.{self._mac('session', sid)}"

    def session_of(self, value: str, now: float | None = None) -> str | None:
        """The session id in a cookie value, if it verifies and has not expired."""
        version, _, rest = value.partition(".")
        sid, _, mac = rest.rpartition(".")
        if version != "v1" or not sid or not hmac.compare_digest(mac.encode(), self._mac("session", sid).encode()):
            return None
        issued = sid.partition(".")[0]
        t = now if now is not None else time.time()
        if not issued.isdigit() or not t - _SESSION_SECONDS < int(issued) <= t + 300:
            return None
        return sid

    def session_from(self, cookie_header: str | None) -> str | None:
        for value in cookie_values(cookie_header or "", SESSION_COOKIE):
            sid = self.session_of(value)
            if sid is not None:
                return sid
        return None

    def authenticate(self, headers: Mapping[str, str]) -> Auth | None:
        if self.bearer_ok(headers.get("Authorization")):
            return Auth("bearer")
        sid = self.session_from(headers.get("Cookie"))
        return Auth("session", sid) if sid is not None else None

    def xsrf_token(self, sid: str) -> str:
        """The XSRF token of a session: only a page of that session knows it."""
        return self._mac("xsrf", sid)

    def xsrf_ok(self, sid: str, given: str | None) -> bool:
        return bool(given) and hmac.compare_digest(str(given).encode(), self.xsrf_token(sid).encode())


def session_cookie_header(value: str, secure: bool = False) -> str:
    """The ``Set-Cookie`` value of a session: host-only, HttpOnly, SameSite=Strict."""
    return (f"{SESSION_COOKIE}={value}; Path=/; Max-Age={_SESSION_SECONDS}; HttpOnly; SameSite=Strict"
            + ("; Secure" if secure else ""))
