"""Attacks on the agents' TCP channel (issue 18, acceptance 3): whoever reaches ``--agent-listen``
without the agent's secret gets one error line and nothing else, and an agent cannot speak as another.

In-process first (a real `AgentListen` with real TLS on 127.0.0.1, short deadlines): no auth line, garbage,
a 10 MiB first line, a slow-loris first line, wrong secrets, a flood of refusals (the log stays small),
200 connections (the agent's cap; the cap on connections not authenticated yet), TLS handshakes never
finished, and the relay facing a man in the middle (a certificate of another CA, or of the right CA for
another name): it never sends the secret. Then through a real daemon: another agent's secret with its
name, and a "from" in a send."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import time
from pathlib import Path
from typing import Any

import pytest
import structlog.testing
from agent_link_support import TlsPeer, listening, refusal
from cryptography.hazmat.primitives import serialization
from support import Hive, async_wait_for

from hyperhive import client
from hyperhive.agent_link import AgentLink
from hyperhive.agent_tls import ca_pem, ensure_ca, make_ca, make_server_cert, write_private
from hyperhive.agent_wire import MAX_AUTH_LINE, auth_line, parse_address
from hyperhive.errors import HiveError
from hyperhive.web.rpc.agent_listen import UNAUTHORIZED
from hyperhive.web.rpc.sockets import MAX_CONNECTIONS

SHORT = {"auth_timeout": 0.5, "handshake_timeout": 0.5}


async def refused_with(p: TlsPeer, code: str, within: float = 5.0) -> dict[str, Any]:
    """The one error line, then the close."""
    line = await p.hear(within)
    assert refusal(line) == (False, code), line
    assert await p.closed(within)
    return line


async def test_no_auth_line_is_refused_at_the_deadline(tmp_path: Path) -> None:
    async with listening(tmp_path / "s", **SHORT) as ls:
        p = await ls.peer()
        t0 = time.monotonic()
        line = await refused_with(p, "bad_request")
        assert "no auth line" in line["error"]["message"] and time.monotonic() - t0 < 3
        await async_wait_for(lambda: ls.listen.pending == 0, what="released")


@pytest.mark.parametrize("first", [b"garbage\n", b'{"id":1,"op":"send","to":"bob","body":"x"}\n',
                                   b'{"op":"auth","agent":"alice","secret":"\\udc00","channel":"hive"}\n',
                                   b'{"op":"auth","agent":"alice","secret":"x","channel":"shell"}\n',
                                   b"\x00" * 100 + b"\n"])
async def test_anything_else_first_gets_one_error_line(tmp_path: Path, first: bytes) -> None:
    async with listening(tmp_path / "s", **SHORT) as ls:
        p = await ls.peer()
        p.say(first + b'{"id":2,"op":"ping"}\n')  # what follows is never served
        await refused_with(p, "bad_request")
        assert ls.agents["alice"].sends == [] and ls.agents["alice"].hive.connections == 0


async def test_a_10_mib_first_line_is_cut_at_4_kib(tmp_path: Path) -> None:
    async with listening(tmp_path / "s", **SHORT) as ls:
        p = await ls.peer()
        t0 = time.monotonic()
        p.writer.write(b'{"op":"auth","agent":"alice","secret":"' + b"A" * (10 << 20))
        try:
            line = await p.hear()
            assert refusal(line) == (False, "bad_request") and str(MAX_AUTH_LINE) in line["error"]["message"]
        except (ConnectionResetError, ssl.SSLError):
            pass  # closed with our bytes unread: the kernel may reset before the line is read
        assert await p.closed() and time.monotonic() - t0 < 5
        await async_wait_for(lambda: ls.listen.pending == 0, what="released")


async def test_a_slow_loris_first_line_gets_no_more_time(tmp_path: Path) -> None:
    async with listening(tmp_path / "s", **SHORT) as ls:
        p = await ls.peer()
        t0 = time.monotonic()

        async def trickle() -> None:  # a byte every 20 ms (1.6 s in all), never the newline
            for b in auth_line("alice", ls.secrets["alice"], "hive")[:-1]:
                p.writer.write(bytes([b]))
                await asyncio.sleep(0.02)

        task = asyncio.ensure_future(trickle())
        try:
            await refused_with(p, "bad_request")
        finally:
            task.cancel()
        assert time.monotonic() - t0 < 1.5  # the deadline counts from the handshake, whatever trickles in


async def test_wrong_secrets_and_another_agents_secret_are_unauthorized(tmp_path: Path) -> None:
    async with listening(tmp_path / "s", **SHORT) as ls:
        for agent, secret in (("alice", ""), ("alice", "x" * 43), ("alice", ls.secrets["bob"]), ("alice", "x" * 3000),
                              ("m1nd", ls.secrets["alice"]), ("ALICE", ls.secrets["alice"]), ("", "")):
            p = await ls.peer()
            p.say(auth_line(agent, secret, "hive"))
            line = await refused_with(p, "unauthorized")
            assert line["error"]["message"] == UNAUTHORIZED
        assert ls.agents["alice"].hive.connections == 0 and ls.agents["bob"].hive.connections == 0


async def test_a_flood_of_refusals_is_logged_sparsely(tmp_path: Path) -> None:
    async with listening(tmp_path / "s", **SHORT) as ls:
        with structlog.testing.capture_logs() as logs:
            for _ in range(70):
                p = await ls.peer()
                p.say(b"nope\n")
                assert refusal(await p.hear()) == (False, "bad_request")
                p.writer.transport.abort()
        refused = [e["count"] for e in logs if e["event"] == "agent_link.refused"]
        assert refused == [*range(1, 11), 16, 32, 64]


async def test_200_connections_of_one_agent_get_its_cap(tmp_path: Path) -> None:
    async with listening(tmp_path / "s") as ls:
        peers = []
        for _ in range(200):  # each authenticated at once, as a relay does
            peers.append(p := await ls.peer())
            p.say(auth_line("alice", ls.secrets["alice"], "hive"))
        answers = [await p.hear() for p in peers]
        assert sum(a["ok"] for a in answers) == MAX_CONNECTIONS
        assert {a["error"]["code"] for a in answers if not a["ok"]} == {"unavailable"}
        assert ls.agents["alice"].hive.connections == MAX_CONNECTIONS
        for p in peers:
            await p.close()
        await async_wait_for(lambda: ls.agents["alice"].hive.connections == 0 and ls.listen.pending == 0,
                             what="all released")
        await ls.authed("alice")


async def test_a_peer_that_does_not_read_is_cut_off_over_tls_too(tmp_path: Path) -> None:
    async with listening(tmp_path / "s") as ls:
        with structlog.testing.capture_logs() as logs:
            p = await ls.authed("alice", limit=1 << 16)  # reading stops at 128 KiB unread
            pings = b"".join(b'{"id":%d,"op":"ping"}\n' % i for i in range(1000))
            try:
                for _ in range(400):  # 400k pings, never a reply read: ~16 MB of replies
                    p.writer.write(pings)
                    await asyncio.wait_for(p.writer.drain(), 10)
            except (ConnectionError, ssl.SSLError):
                pass
            await async_wait_for(lambda: ls.agents["alice"].hive.connections == 0, what="cut off")
        assert any(e["event"] == "socket.slow_reader" for e in logs)


async def test_connections_never_authenticated_are_capped_and_dropped(tmp_path: Path) -> None:
    async with listening(tmp_path / "s", max_pending=50, max_pending_per_host=30, handshake_timeout=1.0) as ls:
        raws = []
        for _ in range(200):  # plain TCP: no handshake ever
            s = socket.create_connection(("127.0.0.1", ls.port))
            s.setblocking(False)
            raws.append(s)
        await async_wait_for(lambda: ls.listen.pending == 30, what="the per-host cap filled")
        await asyncio.sleep(0.1)
        assert ls.listen.pending == 30  # never more from one address
        await async_wait_for(lambda: ls.listen.pending == 0, timeout=5, what="the handshakes timed out")

        def all_closed() -> bool:
            for s in raws:
                try:
                    if s.recv(1) != b"":
                        return False
                except BlockingIOError:
                    return False
                except ConnectionError:
                    pass
            return True

        await async_wait_for(all_closed, what="every one closed by the server")
        for s in raws:
            s.close()
        await ls.authed("alice")  # and the server still serves


async def test_a_handshake_never_finished_is_dropped(tmp_path: Path) -> None:
    async with listening(tmp_path / "s", **SHORT) as ls:
        r, w = await asyncio.open_connection("127.0.0.1", ls.port)
        w.write(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # the start of a ClientHello, then nothing
        t0 = time.monotonic()
        try:
            assert await asyncio.wait_for(r.read(), 5) == b""
        except ConnectionResetError:
            pass
        assert time.monotonic() - t0 < 3
        w.close()


# --- the relay facing a man in the middle ----------------------------------------------------

async def mitm(tmp_path: Path, names: list[str], ca: tuple[Any, Any] | None = None,
               ) -> tuple[asyncio.Server, int, list[bytes]]:
    """A TLS server with a certificate of ``ca`` (a new CA by default) for ``names``, recording
    whatever plaintext reaches it."""
    ca_key, ca_cert = ca or make_ca("evil CA")
    key, cert = make_server_cert(ca_key, ca_cert, names)
    write_private(tmp_path / "evil.key", key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    write_private(tmp_path / "evil.pem", cert.public_bytes(serialization.Encoding.PEM))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tmp_path / "evil.pem", tmp_path / "evil.key")
    got: list[bytes] = []

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            while data := await r.read(65536):
                got.append(data)
            w.write(b'{"ok":true}\n')
        except (OSError, ssl.SSLError):
            pass
        w.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ctx)
    return server, server.sockets[0].getsockname()[1], got


@pytest.mark.parametrize("kind", ["another CA", "the right CA, another name"])
async def test_the_relay_never_talks_to_a_server_not_certified_by_the_pinned_ca(tmp_path: Path, kind: str) -> None:
    root = tmp_path / "state"
    root.mkdir()
    ca = ensure_ca(root) if kind != "another CA" else None
    pinned = ca_pem(root)
    server, port, got = await mitm(tmp_path, ["elsewhere.example"] if ca else ["127.0.0.1"], ca)
    link = AgentLink(f"127.0.0.1:{port}", pinned, "alice", "the-real-secret", tmp_path / "run")
    await asyncio.to_thread(link.start)
    try:
        r, w = await asyncio.open_unix_connection(str(link.path("hive")))
        try:
            w.write(b'{"id":1,"op":"ping"}\n')
            assert await asyncio.wait_for(r.read(), 10) == b""  # closed: nothing relayed
        except ConnectionError:
            pass
        w.close()
    finally:
        await asyncio.to_thread(link.stop)
        server.close()
    assert not any(b"the-real-secret" in g for g in got) and got == []


# --- through a real daemon -----------------------------------------------------------------------

async def tls_to_daemon(hive: Hive, ca: str) -> TlsPeer:
    port = int((hive.state_dir / "run" / "agent-listen.port").read_text())
    return await TlsPeer.open(port, ca)


@pytest.mark.e2e
async def test_across_hosts_no_agent_speaks_as_another(tmp_path: Path) -> None:
    hive = Hive(tmp_path / "state", ["--agent-listen", "127.0.0.1:0"])
    await asyncio.to_thread(hive.start)
    try:
        for name in ("alice", "bob", "carol"):
            await asyncio.to_thread(hive.admin, "spawn", name=name)
            await asyncio.to_thread(hive.admin, "stop", name=name)
        bob = await asyncio.to_thread(hive.admin, "agent_link", name="bob")
        assert parse_address(bob["address"])[0] == "127.0.0.1"
        # No secret, or bob's secret with alice's name: one error line, nothing else.
        for first, code in ((b'{"id":1,"op":"send","to":"carol","body":"x"}\n', "bad_request"),
                            (auth_line("alice", bob["secret"], "hive"), "unauthorized"),
                            (auth_line("alice", bob["secret"], "api"), "unauthorized")):
            p = await tls_to_daemon(hive, bob["ca_pem"])
            p.say(first + b'{"id":2,"op":"send","to":"carol","body":"smuggled"}\n')
            await refused_with(p, code)
        # Bob's own secret: whatever a request says, bob is the sender.
        p = await tls_to_daemon(hive, bob["ca_pem"])
        p.say(auth_line("bob", bob["secret"], "hive"))
        assert await p.hear() == {"ok": True}
        p.say({"id": 1, "op": "send", "to": "carol", "body": "as alice?", "from": "alice"},
              {"id": 2, "op": "send", "to": "carol", "body": "as bob"})
        first, second = await p.hear(), await p.hear()
        assert first["ok"] is False and first["error"]["code"] == "bad_request"
        assert second["ok"] is True
        carol = hive.paths.socket("carol")  # type: ignore[arg-type]
        got = await asyncio.to_thread(client.request, carol, "recv", wait_seconds=5)
        assert [(m["from"], m["body"]) for m in got["messages"] if m["from"] != "system"] == [("bob", "as bob")]
        # A new secret for bob: the old one is refused from then on.
        bob2 = await asyncio.to_thread(hive.admin, "agent_link", name="bob")
        q = await tls_to_daemon(hive, bob["ca_pem"])
        q.say(auth_line("bob", bob["secret"], "hive"))
        await refused_with(q, "unauthorized")
        log = hive.log_events()
        assert [e for e in log if e.get("event") == "agent_link.refused"]
        assert not any(secret in json.dumps(e) for e in log for secret in (bob["secret"], bob2["secret"]))
        # A destroyed agent's secret is forgotten; it has none to be given.
        carol_secret = (await asyncio.to_thread(hive.admin, "agent_link", name="carol"))["secret"]
        await asyncio.to_thread(hive.admin, "destroy", name="carol")
        macs = hive.state_dir / "tls" / "agent-secrets.json"
        await async_wait_for(lambda: "carol" not in json.loads(macs.read_text()), what="carol's secret forgotten")
        r = await tls_to_daemon(hive, bob["ca_pem"])
        r.say(auth_line("carol", carol_secret, "hive"))
        await refused_with(r, "unauthorized")
        with pytest.raises(HiveError) as info:
            await asyncio.to_thread(hive.admin, "agent_link", name="carol")
        assert info.value.code == "unknown_agent"
        # A restart keeps the CA and the secrets: a relay (a Ray actor) holds its own across daemons.
        await asyncio.to_thread(hive.stop)
        await asyncio.to_thread(hive.start)
        assert (hive.state_dir / "tls" / "ca.pem").read_text() == bob["ca_pem"]
        p = await tls_to_daemon(hive, bob["ca_pem"])
        p.say(auth_line("bob", bob2["secret"], "hive"), {"id": 1, "op": "ping"})
        assert await p.hear() == {"ok": True}
        assert (await p.hear())["agent"] == "bob"
    finally:
        await asyncio.to_thread(hive.stop)
