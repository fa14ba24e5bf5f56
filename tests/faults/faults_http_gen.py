"""HTTP fuzzing (issue 16, the fault suite): raw requests for the dashboard and an agent's web UI.

Each request is written byte by byte, so it can be anything a peer can send:
known routes (every dashboard action, GET and POST, the agent UI's own) with
fuzzed names, ids and query arguments, random paths, odd methods and versions;
good, missing, duplicate and foreign ``Host`` headers; no credentials, the
operator's Bearer token or session cookie, forged or garbled ones; good, bad and
missing XSRF tokens and ``Origin``; fetch metadata; form, JSON and garbage bodies
(lone surrogates and invalid UTF-8 among them) with right and wrong
``Content-Length``, chunked ones; huge headers and many headers; header lines
without a colon, with NUL or bytes past Latin-1. The values come from the same
hypothesis pools as the wire fuzz (`faults_wire_gen.Pools`), the mix from a
seeded ``random.Random``.

Lifecycle stays put: a route that acts on an agent never names one that exists
(``LIVE`` are renamed), and ids are past any that exist, so no credentialed
request starts, stops or spawns anything.
"""

from __future__ import annotations

import json
import random
import urllib.parse
from dataclasses import dataclass
from typing import Any

from faults_wire_gen import Pools

__all__ = ["LIVE", "HttpMixer", "Req", "Target"]

LIVE = frozenset({"fz", "sink", "m1nd"})  # the fuzzed daemon's agents: never named by an action
NAMES = ("ghost", "nobody", "Ghost", "-", "a" * 40, "..", "%2e%2e", "%00", "system", "operator", "a/b", "%2F", "")
IDS = ("1000001", "0", "-1", "1e3", "99999999999999999999999", "９", "²", "0x10", "", "1.5", "9223372036854775808")
ODD_DIGITS = ("²", "١٢", "𝟗", "٣", "৩", "௫", "0²", "12")  # str.isdigit() is true for each; int() refuses some
DASH_GET = ("/", "/login", "/api/state", "/metrics", "/ws", "/static/dashboard.js", "/static/dashboard.css",
            "/static/index.html", "/api/journal/{name}", "/favicon.ico")
DASH_POST = tuple(f"/{v}/{{name}}" for v in ("start", "stop", "restart", "rebuild", "kill", "destroy", "revive",
                                             "purge-tombstone", "revoke-tool")) + tuple(
    f"/{v}/{{id}}" for v in ("approve", "deny", "answer-question", "cancel-question")) + (
    "/request-spawn", "/send", "/inbox/read")
AGENT_GET = ("/", "/api/state", "/events/history", "/events/live", "/static/agent.js")
AGENT_POST = ("/send", "/cancel", "/compact")
QUERY_KEYS = ("token", "unit", "lines", "purge", "force", "tool", "after", "_xsrf", "x")
FORM_KEYS = ("to", "body", "name", "allowed_recipients", "driver", "prompt", "repo", "reason", "chosen", "text",
             "purge", "force", "tool", "_xsrf")
METHODS = ("GET",) * 8 + ("POST",) * 8 + ("HEAD", "PUT", "DELETE", "OPTIONS", "PATCH", "PROPFIND", "get", "G\x00T",
                                         "CONNECT", "TRACE", "")
VERSIONS = ("HTTP/1.1",) * 12 + ("HTTP/1.0", "HTTP/2.0", "HTTP/9.9", "HTTP/1.1x", "HTTP/", "", "http/1.1")


@dataclass(frozen=True)
class Target:
    """One HTTP surface: ``kind`` dashboard or agent; the operator's secrets for it."""

    kind: str
    port: int
    token: str
    cookie: str  # a logged-in session cookie's value
    xsrf: str  # that session's XSRF token


@dataclass(frozen=True)
class Req:
    """A request's bytes; ``answered``: whether a server must answer it (a body
    shorter than its Content-Length is left hanging, and the client closes)."""

    raw: bytes
    answered: bool
    what: str  # method and path, for the report


def _q(text: str) -> str:
    return urllib.parse.quote(text.encode("utf-8", "surrogatepass"), safe="")


class HttpMixer:
    def __init__(self, pools: Pools, seed: int) -> None:
        self.p = pools
        self.rng = random.Random(seed)

    def text(self) -> str:
        r = self.rng
        k = r.randrange(10)
        if k < 3:
            return r.choice(NAMES + IDS + ODD_DIGITS + ("sink", "fz", "1", "200", "harness", "Bash", "yes"))
        return r.choice(self.p.texts)

    def segment(self, kind: str) -> str:
        r = self.rng
        if kind == "id":
            return r.choice(IDS) if r.random() < 0.6 else _q(self.text())
        name = r.choice(NAMES) if r.random() < 0.5 else _q(self.text())
        return "ghost" if urllib.parse.unquote(name) in LIVE else name

    def path(self, target: Target, post: bool) -> str:
        r = self.rng
        k = r.randrange(20)
        if k < 15:
            routes = ((DASH_POST if post else DASH_GET) if target.kind == "dashboard"
                      else (AGENT_POST if post else AGENT_GET))
            if r.random() < 0.2:  # a GET route posted to, or the other way round
                routes = (DASH_GET + DASH_POST) if target.kind == "dashboard" else (AGENT_GET + AGENT_POST)
            path = r.choice(routes).replace("{name}", self.segment("name")).replace("{id}", self.segment("id"))
        elif k < 18:
            path = "/" + "/".join(_q(self.text()) for _ in range(r.randrange(1, 4)))
        else:
            path = r.choice(("*", "http://evil.example/", "//", "/" + "a" * r.choice((1000, 9000, 70_000)),
                             "/%", "/%zz", "/..%2f..%2fetc/passwd", "/static/../../x", "/static/%00", "", "?"))
        if r.random() < 0.4:
            pairs = []
            for _ in range(r.randrange(1, 4)):
                key = r.choice(QUERY_KEYS) if r.random() < 0.7 else _q(self.text())
                value = target.token if key == "token" and r.random() < 0.3 else _q(self.text())
                pairs.append(f"{key}={value}" if r.random() < 0.9 else key)
            path += "?" + "&".join(pairs)
        return path

    def credentials(self, target: Target) -> list[tuple[str, str]]:
        r = self.rng
        k = r.randrange(20)
        if k < 4:
            return []
        if k < 11:
            return [("Authorization", f"Bearer {target.token}")]
        if k < 16:
            return [("Cookie", f"hive_session={target.cookie}")]
        odd = r.choice((f"Bearer {target.token[:-1]}", "Bearer", "Basic Zm9vOmJhcg==", f"bearer  {target.token} ",
                        "Bearer " + self.text()))
        forged = r.choice((f"v1.{target.cookie[3:-2]}xx", "v1...", "v1.9999999999.x.y", self.text(),
                           "v2." + target.cookie[3:], f'"{target.cookie}"'))
        return r.choice(([("Authorization", odd)], [("Cookie", f"hive_session={forged}")],
                         [("Cookie", f"hive_session={forged}; hive_session={target.cookie}")],
                         [("Authorization", odd), ("Cookie", f"a=b; hive_session={forged}")]))

    def headers(self, target: Target, method: str, creds: list[tuple[str, str]]) -> list[tuple[str, str]]:
        r = self.rng
        own = f"127.0.0.1:{target.port}"
        out: list[tuple[str, str]] = []
        k = r.randrange(20)
        if k < 16:
            out.append(("Host", own if k < 13 else f"localhost:{target.port}"))
        elif k < 19:
            out.append(("Host", r.choice(("evil.example", "", "127.0.0.1", "127.0.0.1:1", own + "." + "a" * 300,
                                          self.text()))))
        if r.random() < 0.03:
            out.append(("Host", own))  # a second one
        out += creds
        session = any(k == "Cookie" for k, _ in creds)
        if method not in ("GET", "HEAD") or r.random() < 0.1:
            k = r.randrange(10)
            if k < 7 and session:
                out.append(("X-XSRF-Token", target.xsrf))
            elif k < 9:
                out.append(("X-XSRF-Token", r.choice((target.xsrf[:-1] + "A", "", self.text()))))
        k = r.randrange(10)
        if k < 6 and (session or r.random() < 0.5):
            out.append(("Origin", f"http://{own}"))
        elif k < 8:
            out.append(("Origin", r.choice(("null", "http://evil.example", f"https://{own}", "http://" + own + "/",
                                            self.text()))))
        if r.random() < 0.1:
            out.append(("Sec-Fetch-Site", r.choice(("same-origin", "none", "same-site", "cross-site", self.text()))))
            out.append(("Sec-Fetch-Mode", r.choice(("navigate", "cors", "websocket"))))
        if r.random() < 0.05:
            out.append(("X-Big", "b" * r.choice((8000, 70_000, 200_000))))
        if r.random() < 0.02:
            out += [(f"X-H{i}", "v") for i in range(r.choice((100, 1000, 5000)))]
        if r.random() < 0.05:
            out.append((self.text().replace("\r", "").replace("\n", ""), self.text().replace("\n", "")))
        return out

    def body(self, post: bool) -> tuple[list[tuple[str, str]], bytes]:
        r = self.rng
        k = r.randrange(10)
        if not post and k < 8:
            return [], b""
        if k < 5:
            pairs = [(r.choice(FORM_KEYS) if r.random() < 0.8 else self.text(), self.text())
                     for _ in range(r.randrange(4))]
            body = "&".join(f"{_q(a)}={_q(b)}" for a, b in pairs).encode()
            return [("Content-Type", "application/x-www-form-urlencoded")], body
        if k < 8:
            value: Any = {key: r.choice(self.p.values) for key in r.sample(FORM_KEYS, r.randrange(4))}
            if r.random() < 0.3:
                value = r.choice(self.p.values)
            data = json.dumps(value, ensure_ascii=r.random() < 0.5).encode("utf-8", "surrogatepass")
            return [("Content-Type", "application/json")], data
        ctype = r.choice(("multipart/form-data; boundary=x", "text/plain", "application/json; charset=latin-1",
                          "", self.text().replace("\n", "")))
        return [("Content-Type", ctype)], r.choice(self.p.garbage)

    def request(self, target: Target) -> Req:
        r = self.rng
        method = r.choice(METHODS)
        post = method not in ("GET", "HEAD", "get", "OPTIONS", "TRACE")
        path = self.path(target, post)
        creds = self.credentials(target)
        heads = self.headers(target, method, creds)
        ctype, body = self.body(post)
        heads += ctype
        answered = True
        k = r.randrange(40)
        if k == 0:  # a body shorter than it says (" 5": int() takes the space)
            heads.append(("Content-Length", r.choice(("", " ")) + str(len(body) + r.choice((1, 100, 10**6)))))
            answered = False
        elif k == 1:
            heads.append(("Content-Length", r.choice(("-1", "abc", "1e3", "²", "+0", "0x10", "99999999999999999999"))))
        elif k == 2:
            heads += [("Content-Length", str(len(body)))] * 2
        elif k == 3:
            heads.append(("Transfer-Encoding", "chunked"))
            body = (f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n") if r.random() < 0.5 else b"zz\r\n"
        elif body or post:
            heads.append(("Content-Length", str(len(body))))
        upgrade = path.startswith(("/ws", "/events/live")) and r.random() < 0.6
        if upgrade:
            heads += [("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Version", "13"),
                      ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")]
        elif r.random() < 0.95:
            heads.append(("Connection", "close"))
        version = r.choice(VERSIONS)
        head = f"{method} {path} {version}".rstrip() + "\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in heads)
        try:  # Latin-1 now and then: what a server decodes its head as ("²" a byte of its own)
            raw = head.encode("latin-1" if r.random() < 0.3 else "utf-8")
        except UnicodeEncodeError:
            raw = head.encode("utf-8", "surrogatepass")
        if r.random() < 0.03:  # a header line with no colon, a folded one, NUL, bytes past Latin-1
            raw += r.choice((b"NoColon\r\n", b" folded: x\r\n", b"X-Nul: a\x00b\r\n", b"X-U: \xff\xfe\r\n",
                             b"\r\n\r\n", b"X: y\nZ: z\r\n"))
        raw += b"\r\n" + body
        if r.random() < 0.02:
            raw = r.choice(self.p.garbage) + b"\r\n\r\n"
        return Req(raw, answered, f"{method} {path[:80]}")
