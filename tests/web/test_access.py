"""The pure parts of the access rules (issue 12): sessions signed with the
operator token, the session-bound XSRF token, the Host allowlist, Origin,
fetch metadata, and what the agents' web relay passes on."""

from __future__ import annotations

import time

import pytest

from hyperhive.sandbox.endpoints import WebRefused, judge_web_request
from hyperhive.web.dashboard.access import (
    Access,
    allowed_hosts,
    cookie_values,
    fetch_allowed,
    host_ok,
    login_url,
    origin_ok,
    session_cookie_header,
    strip_cookie,
)

TOKEN = "t" * 43
A = Access(TOKEN)


def test_a_session_verifies_only_with_its_token_and_unaltered() -> None:
    value = A.new_session()
    sid = A.session_of(value)
    assert sid is not None and A.session_from(f"_xsrf=x; hive_session={value}") == sid
    assert Access("u" * 43).session_of(value) is None  # rotated token: every session ends
    version, issued, rand, mac = value.split(".")
    assert A.session_of(f"{version}.{issued}.{rand}x.{mac}") is None
    assert A.session_of(f"{version}.{int(issued) + 1}.{rand}.{mac}") is None
    assert A.session_of("v1.1.2.3") is None and A.session_of("") is None and A.session_of(TOKEN) is None


def test_a_session_expires() -> None:
    now = time.time()
    old = A.new_session(now=now - 31 * 86400)
    assert A.session_of(old) is None
    assert A.session_of(A.new_session(now=now + 3600)) is None  # from the future


def test_a_planted_cookie_beside_the_operators_does_not_shadow_it() -> None:
    value = A.new_session()
    for header in (f"hive_session=junk; hive_session={value}", f"hive_session={value}; hive_session=junk"):
        assert A.session_from(header) == A.session_of(value)
    assert cookie_values("a=1; hive_session=x; b=2; hive_session=y", "hive_session") == ["x", "y"]
    assert strip_cookie("a=1; hive_session=x; b=2; hive_session=y", "hive_session") == "a=1; b=2"


def test_xsrf_is_bound_to_the_session() -> None:
    s1, s2 = A.session_of(A.new_session()), A.session_of(A.new_session())
    assert s1 and s2 and s1 != s2
    assert A.xsrf_ok(s1, A.xsrf_token(s1))
    assert not A.xsrf_ok(s1, A.xsrf_token(s2)) and not A.xsrf_ok(s1, "") and not A.xsrf_ok(s1, None)
    assert not A.xsrf_ok(s1, "anything")


def test_bearer_and_authenticate() -> None:
    assert A.authenticate({"Authorization": f"Bearer {TOKEN}"}).how == "bearer"  # type: ignore[union-attr]
    assert A.authenticate({"Authorization": "Bearer wrong"}) is None
    assert A.authenticate({"Authorization": f"Basic {TOKEN}"}) is None
    assert A.authenticate({"Cookie": f"hive_session={TOKEN}"}) is None  # the token itself is no session
    auth = A.authenticate({"Cookie": f"hive_session={A.new_session()}"})
    assert auth is not None and auth.is_session


def test_cookie_attributes() -> None:
    h = session_cookie_header("v")
    assert "HttpOnly" in h and "SameSite=Strict" in h and "Path=/" in h and "Domain" not in h
    assert "Secure" in session_cookie_header("v", secure=True)


def test_hosts() -> None:
    hosts = allowed_hosts("127.0.0.1", 7800, ["Hive.Example", "proxy.test:443"])
    for ok in ("127.0.0.1:7800", "127.0.0.1", "localhost:7800", "LOCALHOST", "hive.example", "hive.example:7800",
               "proxy.test:443"):
        assert host_ok(ok, hosts), ok
    for bad in ("rebind.attacker.test", "rebind.attacker.test:7800", "127.0.0.1:7801", "proxy.test",
                "proxy.test:7800", "", None, "localhost.:7800", "0.0.0.0:7800"):
        assert not host_ok(bad, hosts), bad
    assert host_ok("[::1]:7800", allowed_hosts("::1", 7800))
    assert not host_ok("0.0.0.0:7800", allowed_hosts("0.0.0.0", 7800))
    assert host_ok("10.1.2.3:7800", allowed_hosts("10.1.2.3", 7800))
    assert login_url("0.0.0.0", 7800, "tok") == "http://127.0.0.1:7800/login?token=tok"
    assert login_url("::1", 7800, "tok") == "http://[::1]:7800/login?token=tok"


def test_origin_and_fetch_metadata() -> None:
    assert origin_ok("http://127.0.0.1:7800", "127.0.0.1:7800")
    for bad in ("http://127.0.0.1:8101", "http://localhost:7800", "null", "http://127.0.0.1:7800/x"):
        assert not origin_ok(bad, "127.0.0.1:7800"), bad
    assert fetch_allowed({}, "POST")  # no metadata: a script; the rest decides
    assert fetch_allowed({"Sec-Fetch-Site": "same-origin"}, "POST")
    assert fetch_allowed({"Sec-Fetch-Site": "none", "Sec-Fetch-Mode": "navigate"}, "GET")
    assert fetch_allowed({"Sec-Fetch-Site": "same-site", "Sec-Fetch-Mode": "navigate",
                          "Sec-Fetch-Dest": "document"}, "GET")  # the dashboard's link
    assert not fetch_allowed({"Sec-Fetch-Site": "same-site", "Sec-Fetch-Mode": "navigate",
                              "Sec-Fetch-Dest": "iframe"}, "GET")
    assert not fetch_allowed({"Sec-Fetch-Site": "same-site", "Sec-Fetch-Mode": "navigate"}, "POST")  # a form
    assert not fetch_allowed({"Sec-Fetch-Site": "same-site", "Sec-Fetch-Mode": "cors"}, "GET")
    assert not fetch_allowed({"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "websocket"}, "GET")


# --- the agents' web relay -------------------------------------------------------------------
PORT = 8123
OWN = f"http://127.0.0.1:{PORT}"


def judge(method: str = "GET", target: str = "/", **headers: str) -> bytes:
    hs = [("Host", f"127.0.0.1:{PORT}")] + [(k.replace("_", "-"), v) for k, v in headers.items()]
    return judge_web_request(method, target, "1", hs, PORT, A).head


def refused(method: str = "GET", target: str = "/", host: str = f"127.0.0.1:{PORT}", **headers: str) -> int:
    hs = [("Host", host)] + [(k.replace("_", "-"), v) for k, v in headers.items()]
    with pytest.raises(WebRefused) as e:
        judge_web_request(method, target, "1", hs, PORT, A)
    return e.value.status


def test_relay_strips_the_operators_secret_and_closes() -> None:
    value = A.new_session()
    head = judge(Cookie=f"theme=dark; hive_session={value}", Connection="keep-alive").decode()
    assert value not in head and "hive_session" not in head and TOKEN not in head
    assert "Cookie: theme=dark\r\n" in head and head.endswith("Connection: close\r\n\r\n")
    assert "keep-alive" not in head
    head = judge(Authorization=f"Bearer {TOKEN}", X_Other="1").decode()
    assert TOKEN not in head and "Authorization" not in head and "X-Other: 1" in head and "Cookie" not in head


def test_relay_websocket_needs_its_own_origin() -> None:
    value = A.new_session()
    ws = {"Cookie": f"hive_session={value}", "Connection": "Upgrade", "Upgrade": "websocket",
          "Sec-WebSocket-Key": "k", "Sec-WebSocket-Version": "13"}
    fwd = judge_web_request("GET", "/events/live?after=0", "1",
                            [("Host", f"127.0.0.1:{PORT}"), ("Origin", OWN), *ws.items()], PORT, A)
    assert fwd.upgrade and b"Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n" in fwd.head
    assert b"hive_session" not in fwd.head and b"Sec-WebSocket-Key: k" in fwd.head
    assert refused(**{k.replace("-", "_"): v for k, v in ws.items()}) == 403  # no Origin
    assert refused(Origin="http://127.0.0.1:7800", **{k.replace("-", "_"): v for k, v in ws.items()}) == 403


def test_relay_refusals() -> None:
    session = f"hive_session={A.new_session()}"
    assert refused() == 401
    assert refused(Cookie="hive_session=v1.1.2.3; _xsrf=x") == 401
    assert refused(host="rebind.attacker.test", Cookie=session) == 421
    assert refused(host=f"127.0.0.1:{PORT + 1}", Cookie=session) == 421
    assert refused("POST", "/send", Cookie=session, Content_Type="text/plain", Content_Length="2") == 403
    assert refused("POST", "/send", Cookie=session, Origin="http://127.0.0.1:7800") == 403
    assert refused(Cookie=session, Sec_Fetch_Site="same-site", Sec_Fetch_Mode="cors") == 403
    assert refused("POST", "/send", Cookie=session, Origin=OWN, Transfer_Encoding="chunked") == 400
    assert refused("POST", "/send", Cookie=session, Origin=OWN, Content_Length="99999999") == 413
    assert refused("GET", "http://elsewhere/", Cookie=session) == 400
    hs = [("Host", f"127.0.0.1:{PORT}"), ("Host", "rebind.attacker.test"), ("Cookie", session)]
    with pytest.raises(WebRefused):
        judge_web_request("GET", "/", "1", hs, PORT, A)
    # What passes: a same-origin POST with the session, a Bearer one without an Origin.
    assert judge("POST", "/send", Cookie=session, Origin=OWN, Content_Length="2").startswith(b"POST /send HTTP/1.1")
    assert judge("POST", "/cancel", Authorization=f"Bearer {TOKEN}", Content_Length="0")
    assert judge(Cookie=session, Sec_Fetch_Site="same-site", Sec_Fetch_Mode="navigate", Sec_Fetch_Dest="document")
    assert judge_web_request("GET", "/", "1", [("Host", f"localhost:{PORT}"), ("Cookie", session)], PORT, A)
