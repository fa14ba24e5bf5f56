"""A harness whose web port stays taken: an error event, no page, no crash
(the turn loop runs beside the binding, so the agent is never held up)."""

from __future__ import annotations

import functools
import socket
from pathlib import Path

import pytest

import hyperhive.harness.web as web
from hyperhive.harness.bus import Bus
from hyperhive.harness.loop import _web_ui
from hyperhive.harness.web import AgentUI
from hyperhive.net import bind_with_retry_async


async def test_a_taken_port_is_an_error_event_not_a_crash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        # The real F21 retry, with short waits: EADDRINUSE three times, then give up.
        monkeypatch.setattr(web, "bind_with_retry_async", functools.partial(bind_with_retry_async, delays=[0.01] * 2))
        bus = Bus(None)
        ui = AgentUI("a", driver=None, bus=bus, turns=None, client=None)  # type: ignore[arg-type]
        assert await _web_ui(ui, port, tmp_path, bus) is None
    [event] = bus.history()
    assert event.kind == "error" and f"127.0.0.1:{port}" in event.data["error"]
    assert not (tmp_path / "web.port").exists()


async def test_a_free_port_is_served_and_written(tmp_path: Path) -> None:
    bus = Bus(None)
    ui = AgentUI("a", driver=None, bus=bus, turns=None, client=None)  # type: ignore[arg-type]
    server = await _web_ui(ui, 0, tmp_path, bus)
    assert server is not None
    try:
        port = int((tmp_path / "web.port").read_text())
        assert bus.history()[-1].kind == "web_ui" and bus.history()[-1].data == {"port": port}
    finally:
        server.stop()
