"""The agents' TCP channel, daemon side (issue 18), in-process: a real `AgentListen` with real TLS on
127.0.0.1 in front of real JSON-lines and MCP servers (op tables of our own, recording their callers),
and the pure parts: the auth line, addresses, the secrets' store, the CA and certificates. The
daemon-level tests are tests/test_agent_link.py and tests/security/test_agent_listen_hostile.py."""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import stat
from pathlib import Path
from typing import Any

import pytest
from agent_link_support import TlsPeer, listening, refusal
from cryptography import x509
from support import async_wait_for

from hyperhive.agent_secrets import MACS_FILE, AgentSecrets
from hyperhive.agent_tls import ca_pem, server_context, server_names
from hyperhive.agent_wire import SOCKETS, auth_line, parse_address, parse_reply
from hyperhive.errors import BadSetting
from hyperhive.names import AgentName
from hyperhive.paths import StatePaths
from hyperhive.settings import Settings
from hyperhive.web.rpc.agent_listen import UNAUTHORIZED, Refused, parse_auth
from hyperhive.wire import Send

INIT = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
    "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}


# --- pure -----------------------------------------------------------------------

@pytest.mark.parametrize(("line", "reason"), [
    (b"not json", "bad_json"),
    (b'{"op":"auth","agent":"a","secret":"\\ud800","channel":"hive"}', "bad_json"),  # a lone surrogate
    (b"\xff\xfe", "bad_json"),
    (b"[1,2]", "not_auth"),
    (b'{"id":1,"op":"ping"}', "not_auth"),
    (b'{"op":"auth","agent":"a","secret":"s"}', "keys"),
    (b'{"op":"auth","agent":"a","secret":"s","channel":"hive","from":"m1nd"}', "keys"),
    (b'{"op":"auth","agent":"a","secret":"s","channel":"admin"}', "channel"),
    (b'{"op":"auth","agent":1,"secret":"s","channel":"hive"}', "types"),
])
def test_anything_but_an_auth_line_is_a_bad_request(line: bytes, reason: str) -> None:
    with pytest.raises(Refused) as info:
        parse_auth(line)
    assert (info.value.code, info.value.reason) == ("bad_request", reason)


def test_an_auth_line_parses() -> None:
    auth = parse_auth(auth_line("alice", "s3cret", "mcp").rstrip(b"\n"))
    assert (auth.agent, auth.secret, auth.channel) == ("alice", "s3cret", "mcp")


@pytest.mark.parametrize(("text", "want"), [
    ("127.0.0.1:7900", ("127.0.0.1", 7900)), ("[::1]:0", ("::1", 0)), ("node-3.lan:443", ("node-3.lan", 443)),
    ("0.0.0.0:1", ("0.0.0.0", 1)),
])
def test_addresses(text: str, want: tuple[str, int]) -> None:
    assert parse_address(text) == want


@pytest.mark.parametrize("text", ["", "7900", "host:", "host:99999", "a b:1", "h/x:1", ":1", "host:1e3"])
def test_bad_addresses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_address(text)


@pytest.mark.parametrize("value", ["7900", "host:x", "a b:1"])
def test_a_bad_agent_listen_is_refused_at_start(value: str) -> None:
    with pytest.raises(BadSetting, match="agent_listen"):
        Settings(agent_listen=value)
    assert Settings(agent_listen="[::]:0").agent_listen == "[::]:0"


def test_the_replies_a_relay_takes() -> None:
    assert parse_reply(b'{"ok":true}\n').ok
    assert parse_reply(b'{"ok":false,"error":{"code":"unauthorized","message":"m"}}').code == "unauthorized"
    assert not parse_reply(b"garbage").ok and not parse_reply(b"[]").ok and not parse_reply(b'{"ok":1}').ok


def test_the_channels_are_the_run_dirs_socket_names() -> None:
    paths, name = StatePaths(Path("/s")), AgentName("a")
    assert [SOCKETS[c] for c in ("hive", "mcp", "api", "proxy")] == [
        p.name for p in (paths.socket(name), paths.mcp_socket(name), paths.api_socket(name), paths.proxy_socket(name))]


# --- secrets --------------------------------------------------------------------

def test_secrets_are_kept_as_macs_bound_to_the_name(tmp_path: Path) -> None:
    s = AgentSecrets(tmp_path)
    a, b = s.issue("alice"), s.issue("bob")
    assert len(a) >= 43 and a != b
    assert s.check("alice", a) and s.check("bob", b)
    assert not s.check("alice", b) and not s.check("bob", a)  # another agent's secret
    assert not s.check("carol", a) and not s.check("alice", "") and not s.check("alice", a + "x")
    stored = (tmp_path / "tls" / MACS_FILE).read_text()
    assert a not in stored and b not in stored
    assert set(json.loads(stored)) == {"alice", "bob"}
    for f in (tmp_path / "tls").iterdir():
        assert stat.S_IMODE(f.stat().st_mode) in (0o600, 0o644), f
    assert stat.S_IMODE((tmp_path / "tls" / MACS_FILE).stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "tls").stat().st_mode) == 0o700
    # A copied MAC matches nothing: it is bound to its agent's name.
    macs = json.loads(stored)
    macs["bob"] = macs["alice"]
    (tmp_path / "tls" / MACS_FILE).write_text(json.dumps(macs))
    again = AgentSecrets(tmp_path)
    assert again.check("alice", a) and not again.check("bob", a) and not again.check("bob", b)


def test_a_new_secret_replaces_the_old_and_forget_drops_it(tmp_path: Path) -> None:
    s = AgentSecrets(tmp_path)
    old = s.issue("alice")
    new = s.issue("alice")
    assert not s.check("alice", old) and s.check("alice", new)
    assert AgentSecrets(tmp_path).check("alice", new)  # kept across a restart
    s.forget("alice")
    assert not s.check("alice", new) and not AgentSecrets(tmp_path).check("alice", new)
    with pytest.raises(ValueError):
        s.issue("../x")


def test_a_lost_key_or_a_broken_file_refuses_everyone(tmp_path: Path) -> None:
    s = AgentSecrets(tmp_path)
    a = s.issue("alice")
    (tmp_path / "tls" / MACS_FILE).write_text("{not json")
    assert not AgentSecrets(tmp_path).check("alice", a)
    a = AgentSecrets(tmp_path).issue("alice")
    (tmp_path / "tls" / "agent-secrets.key").unlink()
    assert not AgentSecrets(tmp_path).check("alice", a)


def test_a_link_in_place_of_a_file_is_never_followed(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_text("kept")
    (tmp_path / "tls").mkdir(mode=0o700)
    (tmp_path / "tls" / MACS_FILE).symlink_to(elsewhere)
    s = AgentSecrets(tmp_path)
    s.issue("alice")  # the link is replaced by a file; what it pointed at is untouched
    assert elsewhere.read_text() == "kept" and not (tmp_path / "tls" / MACS_FILE).is_symlink()


# --- TLS ------------------------------------------------------------------------

def test_the_ca_is_kept_and_the_server_certificate_names_the_host(tmp_path: Path) -> None:
    server_context(tmp_path, "10.1.2.3")
    first = ca_pem(tmp_path)
    server_context(tmp_path, "node-7.lan")
    assert ca_pem(tmp_path) == first  # made once
    cert = x509.load_pem_x509_certificate((tmp_path / "tls" / "server.pem").read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "node-7.lan" in sans.get_values_for_type(x509.DNSName)
    assert "localhost" in sans.get_values_for_type(x509.DNSName)
    assert {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "::1"}
    for key in ("ca.key", "server.key"):
        assert stat.S_IMODE((tmp_path / "tls" / key).stat().st_mode) == 0o600
    assert os.uname().nodename in server_names("0.0.0.0")


async def test_a_client_trusting_the_system_cas_or_old_tls_is_refused(tmp_path: Path) -> None:
    async with listening(tmp_path / "state") as ls:
        with pytest.raises(ssl.SSLCertVerificationError):
            await TlsPeer.open(ls.port, "", ctx=ssl.create_default_context())
        old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        old.load_verify_locations(cadata=ls.ca_pem)
        old.maximum_version = ssl.TLSVersion.TLSv1_2
        with pytest.raises((ssl.SSLError, ConnectionError)):  # the server's alert, or its reset
            await TlsPeer.open(ls.port, "", ctx=old)
        with pytest.raises(ssl.SSLCertVerificationError):  # the host name is checked
            await ls.peer(hostname="elsewhere.example")
        await async_wait_for(lambda: ls.listen.pending == 0, what="the failed handshakes released")


# --- the channels ---------------------------------------------------------------

async def test_hive_is_the_agents_own_json_lines_server(tmp_path: Path) -> None:
    async with listening(tmp_path / "state") as ls:
        p = await ls.authed("alice")
        p.say({"id": 1, "op": "ping"}, {"id": 2, "op": "send", "to": "bob", "body": "hi"})
        assert await p.hear() == {"id": 1, "ok": True, "agent": "alice"}
        assert (await p.hear())["ok"] is True
        assert ls.agents["alice"].sends == [("alice", Send(to="bob", body="hi"))]
        assert ls.agents["alice"].hive.connections == 1 and ls.listen.pending == 0
        await p.close()
        await async_wait_for(lambda: ls.agents["alice"].hive.connections == 0, what="the connection uncounted")


async def test_requests_sent_with_the_auth_line_are_served_after_the_ok(tmp_path: Path) -> None:
    async with listening(tmp_path / "state") as ls:
        p = await ls.peer()
        p.say(auth_line("bob", ls.secrets["bob"], "hive") + b'{"id":7,"op":"ping"}\n')
        assert await p.hear() == {"ok": True}
        assert await p.hear() == {"id": 7, "ok": True, "agent": "bob"}


async def test_mcp_is_the_agents_own_endpoint(tmp_path: Path) -> None:
    async with listening(tmp_path / "state") as ls:
        p = await ls.authed("bob", "mcp")
        p.say(INIT)
        assert (await p.hear(30))["id"] == 0
        p.say({"jsonrpc": "2.0", "method": "notifications/initialized"},
              {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
               "params": {"name": "send", "arguments": {"to": "alice", "body": "via mcp"}}})
        reply = await p.hear()
        assert reply["id"] == 1 and json.loads(reply["result"]["content"][0]["text"])["sent"] is True
        assert [(who, s.body) for who, s in ls.agents["bob"].sends] == [("bob", "via mcp")]


async def echo_server(path: Path) -> asyncio.Server:
    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while data := await r.read(65536):
            w.write(b"echo:" + data)
            await w.drain()
        w.close()

    return await asyncio.start_unix_server(handle, str(path))


async def test_api_and_proxy_are_spliced_to_the_daemons_sockets(tmp_path: Path) -> None:
    api = await echo_server(tmp_path / "api.sock")
    try:
        async with listening(tmp_path / "state", targets={"api": tmp_path / "api.sock"}) as ls:
            p = await ls.peer()
            p.say(auth_line("alice", ls.secrets["alice"], "api") + b"GET / HTTP/1.1\r\n")
            assert await p.hear() == {"ok": True}
            assert await asyncio.wait_for(p.reader.readexactly(21), 10) == b"echo:GET / HTTP/1.1\r\n"
            # No proxy socket for it here: answered, and closed.
            q = await ls.peer()
            q.say(auth_line("alice", ls.secrets["alice"], "proxy"))
            assert refusal(await q.hear()) == (False, "unavailable")
            assert await q.closed()
    finally:
        api.close()


async def test_the_refusals_say_nothing_of_whether_the_agent_exists(tmp_path: Path) -> None:
    async with listening(tmp_path / "state") as ls:
        answers = []
        for agent, secret in (("alice", "wrong"), ("nobody", ls.secrets["alice"]), ("alice", ls.secrets["bob"])):
            p = await ls.peer()
            p.say(auth_line(agent, secret, "hive"))
            answers.append(await asyncio.wait_for(p.reader.readline(), 10))
            assert await p.closed()
        assert len(set(answers)) == 1
        assert json.loads(answers[0]) == {"ok": False, "error": {"code": "unauthorized", "message": UNAUTHORIZED}}
        assert ls.agents["alice"].sends == [] and ls.agents["alice"].hive.connections == 0


async def test_the_agents_connection_cap_holds_over_tls(tmp_path: Path) -> None:
    async with listening(tmp_path / "state", max_connections=3) as ls:
        peers = [await ls.authed("alice") for _ in range(3)]
        p = await ls.peer()
        p.say(auth_line("alice", ls.secrets["alice"], "hive"))
        reply: dict[str, Any] = await p.hear()
        assert refusal(reply) == (False, "unavailable") and "too many" in reply["error"]["message"]
        await peers[0].close()
        await async_wait_for(lambda: ls.agents["alice"].hive.connections == 2, what="a slot back")
        await ls.authed("alice")
