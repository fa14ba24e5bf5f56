"""The relay on an agent's node (issue 18, `hyperhive.agent_link`): the agent's unix sockets tunnelled
to the daemon over TLS. First in-process against a real `AgentListen` (real TLS, real unix sockets,
the relay's own loop on its thread), then end to end through a real daemon with ``--agent-listen``:
messages both ways between a relayed agent and one on its unix socket, an MCP tools/call through the
real `hive mcp` pipe, a model API call reaching the gateway (which holds the key), the egress proxy."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import structlog.testing
from agent_link_support import Listening, listening
from fake_anthropic import FakeAnthropic
from mcp_support import mcp_session, tool_json
from support import Hive, async_wait_for, gateway_call, wait_for

from hyperhive import client
from hyperhive.agent_link import AgentLink, bind_agent_socket
from hyperhive.agent_wire import CHANNELS

DAEMON_KEY = "sk-ant-daemon-key-for-the-relay-test"


@asynccontextmanager
async def relay(ls: Listening, agent: str, run_dir: Path, secret: str | None = None,
                **kw: Any) -> AsyncIterator[AgentLink]:
    link = AgentLink(f"127.0.0.1:{ls.port}", ls.ca_pem, agent, ls.secrets[agent] if secret is None else secret,
                     run_dir, **kw)
    await asyncio.to_thread(link.start)
    try:
        yield link
    finally:
        await asyncio.to_thread(link.stop)


async def ask(path: Path, *lines: dict[str, Any]) -> list[dict[str, Any]]:
    """Write ``lines`` on a new connection to the unix socket; read as many answers."""
    r, w = await asyncio.open_unix_connection(str(path))
    try:
        for line in lines:
            w.write(json.dumps(line).encode() + b"\n")
        return [json.loads(await asyncio.wait_for(r.readline(), 10)) for _ in lines]
    finally:
        w.close()


async def closed_at_once(path: Path) -> bool:
    r, w = await asyncio.open_unix_connection(str(path))
    try:
        w.write(b'{"id":1,"op":"ping"}\n')
        return await asyncio.wait_for(r.read(), 10) == b""
    except ConnectionError:  # reset, or closed before our write
        return True
    finally:
        w.close()


# --- in-process ---------------------------------------------------------------------

async def test_the_relay_speaks_as_its_agent_on_every_socket(tmp_path: Path) -> None:
    async with listening(tmp_path / "state") as ls, relay(ls, "alice", tmp_path / "run") as link:
        for channel in CHANNELS:
            st = os.lstat(link.path(channel))
            assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
        ping, sent = await ask(link.path("hive"), {"id": 1, "op": "ping"},
                               {"id": 2, "op": "send", "to": "bob", "body": "relayed"})
        assert ping == {"id": 1, "ok": True, "agent": "alice"} and sent["ok"] is True
        assert [(who, s.body) for who, s in ls.agents["alice"].sends] == [("alice", "relayed")]
    assert not (tmp_path / "run" / "hive.sock").exists()  # stop removes the sockets


async def test_the_sockets_are_given_to_the_agents_uid(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("chown needs root")
    async with listening(tmp_path / "state") as ls, relay(ls, "alice", tmp_path / "run", owner=(54321, 54322)) as link:
        st = os.lstat(link.path("hive"))
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (54321, 54322, 0o600)


async def test_a_daemon_down_or_refusing_closes_the_local_connection(tmp_path: Path) -> None:
    async with listening(tmp_path / "state") as ls:
        with structlog.testing.capture_logs() as logs:
            async with relay(ls, "alice", tmp_path / "wrong", secret="not-the-secret") as link:
                assert await closed_at_once(link.path("hive"))
        assert any(e["event"] == "agent_link.refused_by_daemon" and e["code"] == "unauthorized" for e in logs)
        assert all("not-the-secret" not in repr(e) for e in logs)
        port = ls.port
    # Nobody listens there any more.
    link = AgentLink(f"127.0.0.1:{port}", ls.ca_pem, "alice", ls.secrets["alice"], tmp_path / "down")
    await asyncio.to_thread(link.start)
    try:
        for _ in range(3):
            assert await closed_at_once(link.path("hive"))
    finally:
        await asyncio.to_thread(link.stop)
    assert ls.secrets["alice"] not in repr(link)


async def test_connections_past_the_cap_are_closed_at_accept(tmp_path: Path) -> None:
    async with listening(tmp_path / "state") as ls, relay(ls, "alice", tmp_path / "run", max_connections=2) as link:
        held = [await asyncio.open_unix_connection(str(link.path("hive"))) for _ in range(2)]
        for r, w in held:
            w.write(b'{"id":1,"op":"ping"}\n')
            assert json.loads(await asyncio.wait_for(r.readline(), 10))["agent"] == "alice"
        assert await closed_at_once(link.path("hive"))
        assert link.refused >= 1
        held[0][1].close()
        await async_wait_for(lambda: link.live("hive") == 1, what="the slot back")
        assert (await ask(link.path("hive"), {"id": 1, "op": "ping"}))[0]["ok"] is True


def test_a_file_in_the_sockets_place_is_refused_not_replaced(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "mcp.sock").write_text("not a socket")
    with pytest.raises(OSError, match="not a socket"):
        bind_agent_socket(run / "mcp.sock", None)
    assert (run / "mcp.sock").read_text() == "not a socket"


# --- through a real daemon -------------------------------------------------------------

@pytest.fixture(scope="module")
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as f:
        yield f


@pytest.fixture(scope="module")
def hive(tmp_path_factory: pytest.TempPathFactory, fake: FakeAnthropic) -> Iterator[Hive]:
    h = Hive(tmp_path_factory.mktemp("link") / "state", ["--agent-listen", "127.0.0.1:0"],
             env={**fake.env(), "ANTHROPIC_API_KEY": DAEMON_KEY})
    h.start()
    try:
        for name in ("alice", "bob"):
            h.admin("spawn", name=name)
            h.admin("stop", name=name)  # the test is the only client of their sockets
        yield h
    finally:
        h.stop()


@pytest.fixture
def alice_link(hive: Hive, tmp_path: Path) -> Iterator[AgentLink]:
    creds = hive.admin("agent_link", name="alice")
    port = int((hive.state_dir / "run" / "agent-listen.port").read_text())
    assert creds["address"] == f"127.0.0.1:{port}" and "BEGIN CERTIFICATE" in creds["ca_pem"]
    link = AgentLink(creds["address"], creds["ca_pem"], "alice", creds["secret"], tmp_path / "node-run")
    link.start()
    try:
        yield link
    finally:
        link.stop()


def drain(path: Path) -> None:
    while client.request(path, "recv", wait_seconds=0)["messages"]:
        pass


@pytest.mark.e2e
def test_messages_go_both_ways_between_a_relayed_agent_and_a_local_one(hive: Hive, alice_link: AgentLink) -> None:
    bob = hive.paths.socket("bob")  # type: ignore[arg-type]
    alice = alice_link.path("hive")
    drain(bob)
    drain(alice)
    assert client.request(alice, "ping")["agent"] == "alice"
    client.request(alice, "send", to="bob", body="from the node")
    got = client.request(bob, "recv", wait_seconds=10)["messages"]
    assert [(m["from"], m["body"]) for m in got] == [("alice", "from the node")]
    # A recv parked over the relay is woken by a send on bob's unix socket.
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(20)
        s.connect(str(alice))
        s.sendall(b'{"id":1,"op":"recv","wait_seconds":15}\n')
        wait_for(lambda: hive.ls()["alice"]["parked"]["tool"] >= 1, what="alice's recv parked over TLS")
        client.request(bob, "send", to="alice", body="back to the node")
        buf = b""
        while not buf.endswith(b"\n"):
            buf += s.recv(65536)
    msgs = json.loads(buf)["messages"]
    assert [(m["from"], m["body"]) for m in msgs] == [("bob", "back to the node")]


@pytest.mark.e2e
async def test_an_mcp_tool_call_through_the_relay(hive: Hive, alice_link: AgentLink) -> None:
    bob = hive.paths.socket("bob")  # type: ignore[arg-type]
    await asyncio.to_thread(drain, bob)
    async with mcp_session(alice_link.path("hive")) as s:  # the real `hive mcp` pipe, on the relay's mcp.sock
        out = tool_json(await s.call_tool("send", {"to": "bob", "body": "an mcp send over tls"}))
    assert out["sent"] is True
    got = (await asyncio.to_thread(client.request, bob, "recv", wait_seconds=10))["messages"]
    assert [(m["from"], m["body"]) for m in got] == [("alice", "an mcp send over tls")]


@pytest.mark.e2e
def test_a_model_api_call_through_the_relay_reaches_the_gateway(hive: Hive, alice_link: AgentLink,
                                                                 fake: FakeAnthropic) -> None:
    before = len(fake.requests)
    reply = gateway_call(alice_link.path("api"), "claude-sonnet-4-5")
    assert reply.startswith(b"HTTP/1.1 200"), reply[:300]
    new = list(fake.requests)[before:]
    assert new and {r.headers.get("x-api-key") for r in new} == {DAEMON_KEY}  # the daemon's key, added there


@pytest.mark.e2e
def test_the_egress_proxy_through_the_relay(alice_link: AgentLink) -> None:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(20)
        s.connect(str(alice_link.path("proxy")))
        s.sendall(b"CONNECT not-allowed.example:443 HTTP/1.1\r\nHost: not-allowed.example:443\r\n\r\n")
        head = s.recv(4096)
    assert head.startswith(b"HTTP/1.1 403"), head  # the daemon's proxy answered: not on alice's allowlist
