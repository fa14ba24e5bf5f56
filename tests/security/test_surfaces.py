"""Every surface of the daemon wants the operator's secret (issue 12, items 1,
2 and 7): the dashboard (page, state, push, metrics, journal, every POST) and
each agent's web UI on its sticky port. Attacks that worked before, each tried
against a real daemon and, for the browser ones, in a real Chromium:

- no secret at all (loopback needed none): 401, a body naming nothing of the
  hive, and nothing changes;
- a forged double-submit XSRF pair (cookie + field): 403;
- DNS rebinding (a foreign ``Host``): 421;
- a page on another 127.0.0.1 port (cookies ignore ports) in the operator's
  own logged-in browser: reads nothing, changes nothing, opens no websocket,
  even after it planted cookies for 127.0.0.1;
- an agent's UI reached without the operator's session; an agent that moves
  its own ``state/web.port``; an agent that serves its own page on its port
  and records what the browser sends it (it never gets the operator's cookie).
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import os
import re
import socket
import socketserver
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import Hive, fetch, wait_for

from hyperhive import client
from hyperhive.actors.ports_core import choose_port
from hyperhive.web.dashboard.actions import ROUTES

pytestmark = [pytest.mark.e2e, pytest.mark.filterwarnings("ignore::ResourceWarning")]

# What a refusal must never show: the agents' names, the product, its version.
SECRETS_OF_THE_HIVE = (b"alice", b"m1nd", b"mallory", b"hyperhive", b"0.1.0", b"tornado")


@pytest.fixture(scope="module")
def hive(module_hive: Hive) -> Hive:
    module_hive.spawn("alice")
    return module_hive


def says_nothing(body: bytes) -> bool:
    low = body.lower()
    return not any(word in low for word in SECRETS_OF_THE_HIVE)


def m1nd(h: Hive, op: str, **fields: Any) -> dict[str, Any]:
    return client.request(h.socket("m1nd"), op, **fields)


def world(h: Hive) -> dict[str, Any]:
    """Everything a refused request might have changed."""
    ls = h.ls()
    return {
        "containers": {n: (c["state"], c["pid"], c["restarts"]) for n, c in ls.items()},
        "questions": [(q["id"], q.get("how")) for q in h.admin("questions")["pending"]],
        "approvals": [(a["id"], a["status"]) for a in h.admin("approvals")["pending"]],
        "alice_inbox": [(m["id"], m["body"])
                        for m in client.request(h.socket("alice"), "recent", limit=100)["messages"]],
        "tombstones": sorted(t["name"] for t in h.admin("tombstones")["tombstones"]),
    }


def agent_events(h: Hive, name: str) -> list[dict[str, Any]]:
    status, body = fetch(h.agent_url(name) + "/events/history", headers=h.bearer)
    assert status == 200, body
    return list(json.loads(body)["events"])


def ws_head(host: str, path: str, **extra: str) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}", "Upgrade: websocket", "Connection: Upgrade",
             f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13", *(f"{k}: {v}" for k, v in extra.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def raw(port: int, data: bytes, timeout: float = 10.0, until_close: bool = False) -> bytes:
    """Send ``data`` on one TCP connection; read one answer (its head and its
    Content-Length body; a 101's head), or everything until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        while chunk := s.recv(1 << 16):
            out += chunk
            head, sep, body = out.partition(b"\r\n\r\n")
            if not sep or until_close:
                continue
            if head.startswith(b"HTTP/1.1 101"):
                break
            length = re.search(rb"(?im)^content-length: *([0-9]+)", head)
            if len(body) >= (int(length.group(1)) if length else 0):
                break
        return out


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


@pytest.fixture(scope="module")
def targets(hive: Hive) -> dict[str, int]:
    """A pending question and a pending approval for the POSTs to aim at."""
    qid = int(m1nd(hive, "ask_operator", question="May I?", options=["yes", "no"])["question_id"])
    aid = int(m1nd(hive, "request_spawn", name="victim")["approval_id"])
    return {"question": qid, "approval": aid}


def every_post(t: dict[str, int]) -> list[tuple[str, dict[str, str]]]:
    """One request per dashboard POST route, aimed at something real."""
    out: list[tuple[str, dict[str, str]]] = []
    for pattern, _cls, _extra in ROUTES:
        path = pattern.replace("([^/]+)", "alice")
        path = path.replace("([0-9]+)", str(t["approval"] if "approve" in path or "deny" in path else t["question"]))
        fields = {"to": "alice", "body": "EVIL", "name": "evil", "chosen": "yes", "purge": "1"}
        out.append((path, fields))
    assert {p for p, _ in out} >= {"/stop/alice", "/kill/alice", "/destroy/alice", "/send", "/request-spawn",
                                   f"/approve/{t['approval']}", f"/answer-question/{t['question']}", "/inbox/read"}
    return out


# --- 1. nothing without the secret ----------------------------------------------------------------

def test_without_the_secret_every_surface_is_401_and_nothing_changes(hive: Hive, targets: dict[str, int]) -> None:
    before = world(hive)
    url = hive.url
    for path in ("/", "/api/state", "/metrics", "/api/journal/alice", "/static/dashboard.js", "/login",
                 "/login?token=not-the-token", "/?token=", "/nowhere"):
        status, body = fetch(url + path)
        assert status == 401 and says_nothing(body), (path, status, body)
    answer = raw(port_of(url), ws_head(f"127.0.0.1:{port_of(url)}", "/ws", Origin=url))
    assert answer.startswith(b"HTTP/1.1 401") and says_nothing(answer.partition(b"\r\n\r\n")[2]), answer
    assert b"Server:" not in answer  # no version in a header either
    planted = {"Cookie": "_xsrf=x; hive_token=x; hive_session=v1.1.x.y", "X-XSRFToken": "x", "X-XSRF-Token": "x"}
    for path, fields in every_post(targets):
        for headers in ({}, planted, {"Authorization": "Bearer not-the-token"}):
            status, body = fetch(url + path, {**fields, "_xsrf": "x"}, headers=headers)
            assert status == 401 and says_nothing(body), (path, headers, status, body)
    assert world(hive) == before


def test_the_login_url_and_bearer(hive: Hive) -> None:
    url_file = hive.state_dir / "run" / "dashboard.url"
    login = hive.login_url
    assert login == f"{hive.url}/login?token={hive.token}"
    assert url_file.stat().st_mode & 0o777 == 0o600 and hive.token_file.stat().st_mode & 0o777 == 0o600
    logged = [e["url"] for e in hive.log_events() if e.get("event") == "dashboard.login"]
    assert logged and logged[-1] == login
    printed = subprocess.run([sys.executable, "-m", "hyperhive", "--state-dir", str(hive.state_dir), "url"],
                             capture_output=True, text=True, timeout=30)
    assert printed.returncode == 0 and printed.stdout.strip() == login
    # The login sets a session cookie (HttpOnly, SameSite=Strict, host-only) and drops the token from the URL.
    answer = raw(port_of(hive.url), f"GET /login?token={hive.token} HTTP/1.1\r\nHost: 127.0.0.1:{port_of(hive.url)}"
                 "\r\nConnection: close\r\n\r\n".encode())
    head = answer.partition(b"\r\n\r\n")[0].decode()
    assert head.startswith("HTTP/1.1 303") and "\r\nLocation: /\r\n" in head
    cookie = re.search(r"Set-Cookie: (hive_session=[^\r]*)", head)
    assert cookie is not None and hive.token not in cookie.group(1)
    assert all(a in cookie.group(1) for a in ("HttpOnly", "SameSite=Strict", "Path=/")) and "Domain" not in head
    s = hive.session()
    assert s.get("/api/state")[0] == 200 and s.get("/metrics")[0] == 200
    status, page = s.get("/login")  # logged in already: to the page, no token needed
    assert status == 200 and b'name="hive-xsrf"' in page
    status, body = hive.get("/metrics")  # Bearer, as a scraper sends it
    assert status == 200 and b"hyperhive_messages_sent_total" in body
    assert fetch(hive.url + "/metrics", headers={"Authorization": f"Bearer {hive.token}x"})[0] == 401


# --- 2. XSRF bound to the session ----------------------------------------------------------------

def test_a_forged_double_submit_pair_is_refused(hive: Hive, targets: dict[str, int]) -> None:
    before = world(hive)
    s = hive.session()  # a real, logged-in session: only the XSRF token is forged
    for path, fields in every_post(targets):
        for header in ("X-XSRFToken", "X-XSRF-Token"):
            status, body = fetch(hive.url + path, {**fields, "_xsrf": "anything"}, opener=s.opener,
                                 headers={"Cookie": f"_xsrf=anything; hive_session={s.cookie}", header: "anything"})
            assert status == 403 and says_nothing(body), (path, status, body)
    assert world(hive) == before
    assert s.post("/send", {"to": "alice", "body": "the real thing"})[0] == 200  # the session's own token works


# --- 3. Host ---------------------------------------------------------------------------------------

def test_a_foreign_host_is_refused(hive: Hive, targets: dict[str, int]) -> None:
    before = world(hive)
    evil = {"Host": "rebind.attacker.test"}
    for path in ("/", "/api/state", "/metrics", "/static/dashboard.js", f"/login?token={hive.token}"):
        for headers in (evil, {**evil, **hive.bearer}, {"Host": f"rebind.attacker.test:{port_of(hive.url)}"}):
            status, body = fetch(hive.url + path, headers=headers)
            assert status == 421 and says_nothing(body), (path, headers, status, body)
    answer = raw(port_of(hive.url), ws_head("rebind.attacker.test", "/ws", Origin="http://rebind.attacker.test",
                                            Authorization=f"Bearer {hive.token}"))
    assert answer.startswith(b"HTTP/1.1 421") and b"Set-Cookie" not in answer
    for path, fields in every_post(targets):
        assert fetch(hive.url + path, fields, headers={**evil, **hive.bearer})[0] == 421
    agent = hive.agent_url("alice")
    for path in ("/", "/api/state"):
        status, body = fetch(agent + path, headers={**evil, **hive.bearer})
        assert status == 421 and says_nothing(body)
    assert world(hive) == before
    # The names it does answer to: 127.0.0.1, localhost (with the port).
    assert fetch(f"http://localhost:{port_of(hive.url)}/api/state", headers=hive.bearer)[0] == 200


def test_allowed_host_adds_a_name(tmp_path: Path) -> None:
    h = Hive(tmp_path / "state", extra_args=["--allowed-host", "hive.example", "--allowed-host", "proxy.test:443"])
    h.start()
    try:
        for host, want in (("hive.example", 200), (f"hive.example:{port_of(h.url)}", 200), ("proxy.test:443", 200),
                           ("proxy.test", 421), ("other.example", 421)):
            assert fetch(h.url + "/api/state", headers={"Host": host, **h.bearer})[0] == want, host
    finally:
        h.stop()


# --- the agents' web UIs -----------------------------------------------------------------------------

def test_an_agent_ui_refuses_without_the_operators_session(hive: Hive) -> None:
    url = hive.agent_url("alice")
    port = port_of(url)
    wait_for(lambda: fetch(url + "/api/state", headers=hive.bearer)[0] == 200, timeout=30, what="alice's UI")
    mark = agent_events(hive, "alice")[-1]["id"]
    before = world(hive)
    s = hive.session()
    json_post = {"Content-Type": "application/json"}
    for creds in ({}, {"Cookie": "hive_session=v1.1.x.y; _xsrf=x"}, {"Authorization": "Bearer nope"},
                  {"Cookie": f"hive_token={hive.token}"}):
        for path in ("/", "/api/state", "/events/history"):
            status, body = fetch(url + path, headers=creds)
            assert status == 401 and says_nothing(body), (path, creds, status, body)
        for path in ("/send", "/cancel", "/compact"):
            status, body = fetch(url + path, b'{"body": "EVIL-agent"}', headers={**json_post, **creds, "Origin": url})
            assert status == 401 and says_nothing(body), (path, creds, status, body)
        answer = raw(port, ws_head(f"127.0.0.1:{port}", "/events/live?after=0", Origin=url, **creds))
        assert answer.startswith(b"HTTP/1.1 401"), answer
    # The operator's session, but from another page (another port's origin, or none given).
    session = {"Cookie": f"hive_session={s.cookie}"}
    for origin in ({"Origin": "http://127.0.0.1:7800"}, {"Origin": "null"}, {}):
        for path in ("/send", "/cancel", "/compact"):
            status, body = fetch(url + path, b'{"body": "EVIL-agent"}', headers={**json_post, **session, **origin})
            assert status == 403 and says_nothing(body), (path, origin, status)
        answer = raw(port, ws_head(f"127.0.0.1:{port}", "/events/live?after=0", **session, **origin))
        assert answer.startswith(b"HTTP/1.1 403"), answer
    cross = {"Sec-Fetch-Site": "same-site", "Sec-Fetch-Mode": "cors"}
    assert fetch(url + "/api/state", headers={**session, **cross})[0] == 403
    assert world(hive) == before
    assert [e for e in agent_events(hive, "alice") if e["id"] > mark and "EVIL" in json.dumps(e)] == []
    # And with it, from its own origin, everything answers (the page's own requests).
    assert fetch(url + "/api/state", headers=session)[0] == 200
    assert fetch(url + "/cancel", b"{}", headers={**json_post, **session, "Origin": url})[0] == 200
    answer = raw(port, ws_head(f"127.0.0.1:{port}", "/events/live?after=0", **session, Origin=url))
    assert answer.startswith(b"HTTP/1.1 101"), answer


def row_port(h: Hive, name: str) -> Any:
    return next(c for c in h.get_json("/api/state")[1]["state"]["containers"] if c["name"] == name)["port"]


def test_an_agents_own_web_port_file_moves_no_link(hive: Hive) -> None:
    sticky = port_of(hive.agent_url("alice"))
    own = hive.paths.state("alice") / "web.port"  # type: ignore[arg-type]
    own.write_text("7800\n")  # as the agent could
    os.chown(own, own.parent.stat().st_uid, own.parent.stat().st_gid)
    try:
        assert row_port(hive, "alice") == sticky
        assert hive.ls()["alice"]["state"] == "running"
    finally:
        own.unlink()


def test_a_port_the_daemon_cannot_bind_is_reported_and_shows_no_link(hive: Hive) -> None:
    claimed = [int((d / "port").read_text()) for d in hive.paths.agents.iterdir() if (d / "port").exists()]
    port, _ = choose_port("squatted", claimed, hive.port_base)
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", port))
    squatter.listen()
    try:
        hive.spawn("squatted")
        assert int((hive.paths.agents / "squatted" / "port").read_text()) == port
        failed = wait_for(lambda: [e for e in hive.log_events()
                                   if e.get("event") == "endpoints.web_bind_failed" and e.get("agent") == "squatted"])
        assert failed[0]["port"] == port
        assert hive.ls()["squatted"]["state"] == "running" and row_port(hive, "squatted") is None
        assert row_port(hive, "alice") is not None
    finally:
        squatter.close()
        hive.admin("destroy", name="squatted", purge=True)


# --- an agent's own page on its port: a fake web.sock --------------------------------------------

class FakeUI:
    """What an agent could put on ``state/web.sock``: records every request head,
    serves a page that plants cookies for 127.0.0.1, answers websocket upgrades."""

    def __init__(self, path: Path, uid: int, gid: int) -> None:
        self.heads: list[str] = []
        fake = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                head = b""
                while b"\r\n\r\n" not in head:
                    chunk = self.request.recv(1 << 16)
                    if not chunk:
                        return
                    head += chunk
                text = head.partition(b"\r\n\r\n")[0].decode("latin-1")
                fake.heads.append(text)
                if "upgrade: websocket" in text.lower():
                    key = re.search(r"(?im)^sec-websocket-key: *(\S+)", text)
                    assert key is not None
                    accept = base64.b64encode(hashlib.sha1(
                        (key.group(1) + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
                    self.request.sendall(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                                          f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n").encode()
                                         + b"\x81\x05hello")
                    return
                body = (b"<!doctype html><title>agent page</title><script>"
                        b"document.cookie = 'hive_session=planted-by-js; path=/';"
                        b"document.cookie = 'hive_session=planted-by-js-api; path=/api';"
                        b"document.body && (document.body.dataset.planted = '1');</script>"
                        b"<body data-agent='1'>the agent's own page</body>")
                self.request.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nConnection: close\r\n"
                                     b"Set-Cookie: hive_session=planted-by-header; Path=/\r\n"
                                     b"Set-Cookie: _xsrf=planted; Path=/\r\n"
                                     + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)

        path.unlink(missing_ok=True)
        self.server = socketserver.ThreadingUnixStreamServer(str(path), Handler)
        self.server.daemon_threads = True
        os.chmod(path, 0o600)
        os.chown(path, uid, gid)  # the owner check wants the agent's own socket
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def mallory(hive: Hive) -> Iterator[tuple[str, FakeUI]]:
    """An agent whose harness is stopped and whose web.sock is the test's fake."""
    hive.spawn("mallory")
    hive.admin("stop", name="mallory")
    wait_for(lambda: hive.ls()["mallory"]["state"] == "stopped", what="mallory stopped")
    state = hive.paths.state("mallory")  # type: ignore[arg-type]
    fake = FakeUI(state / "web.sock", state.stat().st_uid, state.stat().st_gid)
    try:
        yield hive.agent_url("mallory"), fake
    finally:
        fake.close()


def test_the_agent_never_receives_the_operators_secret(hive: Hive, mallory: tuple[str, FakeUI]) -> None:
    url, fake = mallory
    port = port_of(url)
    s = hive.session()
    fake.heads.clear()
    cookies = f"theme=dark; hive_session={s.cookie}; lang=en"
    answer = raw(port, f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nCookie: {cookies}\r\n"
                       "Connection: keep-alive\r\n\r\n".encode(), until_close=True)  # the relay closes it
    assert answer.startswith(b"HTTP/1.1 200") and b"the agent's own page" in answer
    assert b"set-cookie" not in answer.lower()  # the agent sets no cookie for 127.0.0.1
    assert fetch(url + "/x", headers=hive.bearer)[0] == 200
    answer = raw(port, ws_head(f"127.0.0.1:{port}", "/events/live", Cookie=cookies, Origin=url), until_close=True)
    assert answer.startswith(b"HTTP/1.1 101") and answer.endswith(b"\x81\x05hello")  # spliced after its head
    assert len(fake.heads) == 3
    for head in fake.heads:
        assert s.cookie not in head and hive.token not in head and "hive_session" not in head, head
        assert "authorization" not in head.lower(), head
    assert "Cookie: theme=dark; lang=en" in fake.heads[0] and "Connection: close" in fake.heads[0]
    assert "Connection: Upgrade" in fake.heads[2] and "Upgrade: websocket" in fake.heads[2]
    # One request per connection: a second request pipelined behind an authenticated one never arrives.
    fake.heads.clear()
    two = (f"GET /first HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {hive.token}\r\n\r\n"
           f"GET /second HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n").encode()
    answer = raw(port, two, until_close=True)
    assert answer.count(b"HTTP/1.1 200") == 1
    assert [h.split()[1] for h in fake.heads] == ["/first"]


# --- in the operator's browser: another port's page -----------------------------------------------

EVIL_PAGE = b"""<!doctype html><title>just a page</title>
<iframe name="sink" id="sink"></iframe>
<form id="f" method="POST" target="sink"><input name="to" value="alice"><input name="body" value="EVIL-form">
<input name="_xsrf" value="planted"></form>
<body data-ready="1"></body>"""

ATTACK = """async ({dash, agent}) => {
  document.cookie = "_xsrf=planted; path=/";
  document.cookie = "hive_session=planted; path=/api";
  document.cookie = "hive_token=planted; path=/";
  const out = {cookies: document.cookie};
  const tryFetch = async (url, init) => {
    try {
      const r = await fetch(url, Object.assign({credentials: "include"}, init || {}));
      if (r.type === "opaque") return "opaque";
      return "read " + r.status + " " + (await r.text()).slice(0, 300);
    } catch (e) { return "blocked"; }
  };
  const trySocket = (url) => new Promise((resolve) => {
    const got = [];
    const ws = new WebSocket(url);
    ws.onmessage = (m) => got.push(String(m.data).slice(0, 100));
    ws.onclose = () => resolve(got.length ? "read " + got.join("|") : "closed");
    setTimeout(() => resolve(got.length ? "read " + got.join("|") : "timeout"), 8000);
  });
  const form = (o) => new URLSearchParams(Object.assign({_xsrf: "planted"}, o));
  out.state = await tryFetch(dash + "/api/state");
  out.state_nocors = await tryFetch(dash + "/api/state", {mode: "no-cors"});
  out.metrics = await tryFetch(dash + "/metrics");
  out.stop = await tryFetch(dash + "/stop/alice", {method: "POST", mode: "no-cors", body: form({})});
  out.send = await tryFetch(dash + "/send", {method: "POST", mode: "no-cors",
                                             body: form({to: "alice", body: "EVIL-dash"})});
  out.spawn = await tryFetch(dash + "/request-spawn", {method: "POST", mode: "no-cors", body: form({name: "evil"})});
  out.send_header = await tryFetch(dash + "/send", {method: "POST", body: form({to: "alice", body: "EVIL-hdr"}),
                                                    headers: {"X-XSRF-Token": "planted", "X-XSRFToken": "planted"}});
  out.ws = await trySocket(dash.replace("http:", "ws:") + "/ws");
  out.agent_state = await tryFetch(agent + "/api/state");
  out.agent_history = await tryFetch(agent + "/events/history", {mode: "no-cors"});
  out.agent_live = await trySocket(agent.replace("http:", "ws:") + "/events/live?after=0");
  for (const verb of ["send", "cancel", "compact"]) {
    out["agent_" + verb] = await tryFetch(agent + "/" + verb, {method: "POST", mode: "no-cors",
      headers: {"Content-Type": "text/plain"}, body: JSON.stringify({body: "EVIL-agent-" + verb})});
    out["agent_" + verb + "_json"] = await tryFetch(agent + "/" + verb, {method: "POST",
      headers: {"Content-Type": "application/json"}, body: JSON.stringify({body: "EVIL-agent-json"})});
  }
  const f = document.getElementById("f");
  f.action = dash + "/send";
  await new Promise((resolve) => {
    document.getElementById("sink").onload = resolve;
    setTimeout(resolve, 8000);
    f.submit();
  });
  return out;
}"""


@pytest.fixture
def evil_origin() -> Iterator[str]:
    """A test server on another 127.0.0.1 port: the attacker's page."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(EVIL_PAGE)))
            self.end_headers()
            self.wfile.write(EVIL_PAGE)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_another_ports_page_in_the_operators_browser_gets_nothing(
        hive: Hive, chromium_browser: Any, evil_origin: str) -> None:
    alice = hive.agent_url("alice")
    wait_for(lambda: fetch(alice + "/api/state", headers=hive.bearer)[0] == 200, timeout=30, what="alice's UI")
    mark = agent_events(hive, "alice")[-1]["id"]
    refused_before = len([e for e in hive.log_events() if e.get("event") in ("dashboard.refused", "web.refused")])
    context = chromium_browser.new_context()
    try:
        operator = context.new_page()
        operator.set_default_timeout(15_000)
        operator.goto(hive.login_url)
        operator.wait_for_selector("#conn.live")
        before = world(hive)
        evil = context.new_page()
        evil.set_default_timeout(15_000)
        evil.goto(evil_origin + "/")
        out = evil.evaluate(ATTACK, {"dash": hive.url, "agent": alice})
        assert "_xsrf=planted" in out["cookies"]  # the cookies were planted, for every 127.0.0.1 port
        for key in ("state", "metrics", "send_header", "agent_state") + tuple(
                f"agent_{v}_json" for v in ("send", "cancel", "compact")):
            assert out[key] == "blocked", (key, out[key])
        for key in ("state_nocors", "stop", "send", "spawn", "agent_history") + tuple(
                f"agent_{v}" for v in ("send", "cancel", "compact")):
            assert out[key] in ("opaque", "blocked"), (key, out[key])  # blocked: CORP same-origin
        assert out["ws"] in ("closed", "timeout") and out["agent_live"] in ("closed", "timeout"), out
        assert world(hive) == before
        assert [e for e in agent_events(hive, "alice") if e["id"] > mark and "EVIL" in json.dumps(e)] == []
        # They reached the servers and were refused there (not merely hidden by the browser).
        refused = [e for e in hive.log_events() if e.get("event") in ("dashboard.refused", "web.refused")]
        new = refused[refused_before:]
        paths = {e.get("path") for e in new}
        assert {"/api/state", "/stop/alice", "/send", "/request-spawn", "/ws"} <= paths, paths
        assert len([e for e in new if e.get("event") == "web.refused" and e.get("agent") == "alice"]) >= 5, new
        # The operator's own page still works, planted cookies and all: a POST, a push, alice's UI.
        operator.reload()
        operator.wait_for_selector("#conn.live")
        token = uuid.uuid4().hex[:8]
        form = operator.locator("#send-form")
        form.locator("input[name=to]").fill("alice")
        form.locator("textarea[name=body]").fill(f"still mine {token}")
        form.locator("button").click()
        operator.locator("#flow .row", has_text=f"still mine {token}").first.wait_for(timeout=5000)
        ui = context.new_page()
        ui.set_default_timeout(15_000)
        ui.goto(alice + "/")
        ui.wait_for_selector("body[data-ready='1']")
        ui.wait_for_selector("#conn.up")
    finally:
        context.close()


def test_an_agents_own_page_plants_cookies_and_learns_nothing(
        hive: Hive, chromium_browser: Any, mallory: tuple[str, FakeUI]) -> None:
    """The page on mallory's port is mallory's own (its web.sock): it sets
    hive_session cookies for 127.0.0.1 by header and by script. It never sees the
    operator's cookie, and the operator's dashboard works on."""
    url, fake = mallory
    context = chromium_browser.new_context()
    try:
        operator = context.new_page()
        operator.set_default_timeout(15_000)
        operator.goto(hive.login_url)
        operator.wait_for_selector("#conn.live")
        fake.heads.clear()
        tab = context.new_page()
        tab.set_default_timeout(15_000)
        tab.goto(url + "/")  # as the dashboard's link would: one navigation, the session goes along
        tab.wait_for_selector("body[data-agent='1']")
        tab.reload()
        tab.wait_for_selector("body[data-agent='1']")
        assert len(fake.heads) >= 2
        real = next(c["value"] for c in context.cookies() if c["name"] == "hive_session" and c["httpOnly"])
        for head in fake.heads:
            assert real not in head and "hive_session" not in head and hive.token not in head, head
        assert tab.evaluate("document.cookie").find(real) < 0  # HttpOnly: no script reads it
        planted = [c for c in context.cookies() if c["name"] == "hive_session" and not c["httpOnly"]]
        assert planted, context.cookies()  # by script, beside the operator's (never over it: HttpOnly)
        assert not [c for c in context.cookies() if c["value"] in ("planted-by-header", "planted")]
        operator.reload()
        operator.wait_for_selector("#conn.live")
        state = operator.evaluate("fetch('/api/state').then(r => r.status)")
        assert state == 200
        token = uuid.uuid4().hex[:8]
        form = operator.locator("#send-form")
        form.locator("input[name=to]").fill("alice")
        form.locator("textarea[name=body]").fill(f"after planting {token}")
        form.locator("button").click()
        operator.locator("#flow .row", has_text=f"after planting {token}").first.wait_for(timeout=5000)
    finally:
        context.close()
