"""Reading an HTTP/1.x request head off a connection, for the egress proxy
(`proxy`) and the agents' web relay (`web_relay`): at most ``HEAD_LIMIT``
bytes, a strict request line, header lines that are tokens and carry no
control characters. What cannot be read is a `Refusal` (400, or 431 for a
head too large), which each server answers in its own words.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass

__all__ = ["HEAD_LIMIT", "Refusal", "RequestHead", "bad_request", "parse_head", "read_head"]

HEAD_LIMIT = 16 * 1024
_REQUEST_LINE = re.compile(r"([!#$%&'*+.^_`|~0-9A-Za-z-]+) (\S+) HTTP/1\.([01])")
_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


class Refusal(Exception):
    """A request refused: ``status`` and ``reason`` for the log, ``text`` for the proxy's answer."""

    def __init__(self, status: int, reason: str, host: str = "", port: int = 0, text: str = "") -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.host = host
        self.port = port
        self.text = text


@dataclass(frozen=True)
class RequestHead:
    """A parsed request line and its header lines, in order (names as sent)."""

    method: str
    target: str
    minor: str
    headers: list[tuple[str, str]]


async def read_head(reader: asyncio.StreamReader) -> tuple[bytes, bytes] | None:
    """(head without its blank line, bytes after it); None on EOF first."""
    buf = b""
    while True:
        end = buf.find(b"\r\n\r\n")
        if end >= 0:
            if end > HEAD_LIMIT:
                break
            return buf[:end], buf[end + 4:]
        if len(buf) > HEAD_LIMIT:
            break
        data = await reader.read(1 << 16)
        if not data:
            return None
        buf += data
    raise Refusal(431, f"request head over {HEAD_LIMIT // 1024} KiB",
                  text=f"hyperhive proxy: the request head is over {HEAD_LIMIT // 1024} KiB\n")


def bad_request(reason: str) -> Refusal:
    """A 400 for what cannot be read as a request."""
    return Refusal(400, reason, text=f"hyperhive proxy: bad request ({reason})\n")


def parse_head(head: bytes) -> RequestHead:
    """The head ``read_head`` returned, parsed; a 400 `Refusal` when it is no HTTP/1.x request."""
    lines = head.split(b"\r\n")
    m = _REQUEST_LINE.fullmatch(lines[0].decode("latin-1"))
    if m is None:
        raise bad_request("not an HTTP/1.x request line")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not _TOKEN.fullmatch(name) or b"\0" in value or b"\r" in value or b"\n" in value:
            raise bad_request("malformed header line")
        headers.append((name.decode("latin-1"), value.strip(b" \t").decode("latin-1")))
    return RequestHead(m.group(1), m.group(2), m.group(3), headers)
