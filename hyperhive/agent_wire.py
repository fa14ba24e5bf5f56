"""What both ends of an agent's TCP channel share (issue 18): the daemon's
``--agent-listen`` server (`hyperhive.web.rpc.agent_listen`) and the relay on
the agent's node (`hyperhive.agent_link`), standard library only. The bytes
both ways after the auth go through `hyperhive.sandbox.relay.splice`.

The first line a connection sends, after the TLS handshake::

    {"op":"auth","agent":NAME,"secret":S,"channel":"hive"|"mcp"|"api"|"proxy"|"web"}

answered by one line: ``{"ok":true}`` (then the stream is that channel for
that agent), or ``{"ok":false,"error":{"code","message"}}`` and the close.

``web`` runs the other way (`hyperhive.web.rpc.web_dock`): the node parks the
connection; the daemon, when a page asks for the agent's web UI, writes
``OPEN_LINE``; the node answers ``{"ok":true}`` once it has the harness's
``web.sock`` (or an error line), then the bytes are the page's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import ssl
from dataclasses import dataclass
from typing import Any

__all__ = ["AUTH_TIMEOUT", "CHANNELS", "KEEPALIVE", "LINK_CHANNELS", "MAX_AUTH_LINE", "MAX_SECRET", "OK_LINE",
           "OPEN_LINE", "REVERSE", "SOCKETS", "Reply",
           "auth_line", "client_context", "error_line", "keep_alive", "parse_address", "parse_reply"]

# Each channel and the unix socket it stands for, in an agent's run dir (the names of `StatePaths`).
SOCKETS = {"hive": "hive.sock", "mcp": "mcp.sock", "api": "api.sock", "proxy": "proxy.sock"}
CHANNELS = tuple(SOCKETS)
REVERSE = ("web",)  # channels the node dials and the daemon opens (the agent's web UI)
LINK_CHANNELS = CHANNELS + REVERSE  # every channel an auth line may name
MAX_AUTH_LINE = 4096  # bytes, without its newline
MAX_SECRET = 256  # characters: `secrets.token_urlsafe(32)` gives 43
AUTH_TIMEOUT = 10.0  # seconds for the first line to come whole (and for the relay, for its answer)
OK_LINE = b'{"ok":true}\n'
OPEN_LINE = b'{"op":"open"}\n'  # the daemon to a parked ``web`` connection: a page wants the UI
KEEPALIVE = (30, 10, 3)  # TCP_KEEPIDLE, TCP_KEEPINTVL (seconds), TCP_KEEPCNT: a dead peer found in ~1 min
_HOST = re.compile(r"[A-Za-z0-9._-]{1,253}|[0-9A-Fa-f:.]{2,45}")  # a name, IPv4, or IPv6 (then in [] with a port)


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` too) → (host, port); ValueError saying why (pure)."""
    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not (port.isascii() and port.isdigit()) or int(port) > 65535:
        raise ValueError(f"must be HOST:PORT (PORT 0..65535), got {text!r}")
    if not _HOST.fullmatch(host):
        raise ValueError(f"{host!r} is not a host name or an address (in {text!r})")
    return host, int(port)


def auth_line(agent: str, secret: str, channel: str) -> bytes:
    return json.dumps({"op": "auth", "agent": agent, "secret": secret, "channel": channel},
                      separators=(",", ":")).encode() + b"\n"


def error_line(code: str, message: str) -> bytes:
    return json.dumps({"ok": False, "error": {"code": code, "message": message}},
                      separators=(",", ":")).encode() + b"\n"


@dataclass(frozen=True)
class Reply:
    ok: bool
    code: str = ""
    message: str = ""


def parse_reply(line: bytes) -> Reply:
    """The daemon's answer to an auth line (pure); anything unexpected is a refusal."""
    try:
        obj: Any = json.loads(line)
    except ValueError:
        return Reply(False, "bad_reply", "the daemon's answer is not JSON")
    if not isinstance(obj, dict):
        return Reply(False, "bad_reply", "the daemon's answer is not an object")
    if obj.get("ok") is True:
        return Reply(True)
    err = obj.get("error")
    err = err if isinstance(err, dict) else {}
    return Reply(False, str(err.get("code", "bad_reply"))[:64], str(err.get("message", ""))[:512])


def client_context(ca_pem: str) -> ssl.SSLContext:
    """The relay's context: the daemon's CA alone is trusted (no system CAs), the
    host name is checked against the server's certificate, TLS 1.3 only."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED and check_hostname
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_verify_locations(cadata=ca_pem)
    return ctx


def keep_alive(conn: asyncio.StreamWriter | asyncio.BaseTransport) -> None:
    """TCP keepalive (`KEEPALIVE`) on a connection that may stay silent for hours (a parked web one,
    a parked recv): a peer gone without a close (its host rebooted, a partition) ends it."""
    sock = conn.get_extra_info("socket")
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for opt, value in zip(("TCP_KEEPIDLE", "TCP_KEEPINTVL", "TCP_KEEPCNT"), KEEPALIVE, strict=True):
            if hasattr(socket, opt):
                sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, opt), value)
