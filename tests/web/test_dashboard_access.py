"""Dashboard access (F46; issue 6 item 6, issue 12): the session's XSRF token
on every POST, refusal to start on a non-loopback address without a token
file, and a page that works with a given token file (logged in once with
``?token=``, then kept in the session cookie). The attacks are in
tests/security/test_surfaces.py."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import Hive, fetch, wait_for

pytestmark = pytest.mark.e2e  # every test here starts a daemon

TOKEN = "operator-token-for-tests-0123456789"


def test_post_without_the_sessions_xsrf_token_is_refused(hive: Hive) -> None:
    wait_for(lambda: hive.ls()["m1nd"]["state"] == "running", what="m1nd up")
    s = hive.session()
    status, body = s.post("/send", {"to": "m1nd", "body": "no xsrf"}, xsrf=False)
    assert status == 403 and b"forbidden" in body
    assert s.post("/stop/m1nd", {}, xsrf=False)[0] == 403
    assert hive.ls()["m1nd"]["state"] == "running"  # the refused POST changed nothing
    # Another session's token is no good either: it is bound to the session.
    other = hive.session()
    assert other.xsrf != s.xsrf
    status, _ = fetch(hive.url + "/stop/m1nd", {}, headers={"X-XSRF-Token": other.xsrf}, opener=s.opener)
    assert status == 403 and hive.ls()["m1nd"]["state"] == "running"
    # The same POST with the session's own token goes through: it was the XSRF check that refused.
    status, body = s.post("/send", {"to": "m1nd", "body": "with token"})
    assert status == 200, body
    status, body = s.post("/send", {"to": "m1nd", "body": "as a form field", "_xsrf": s.xsrf}, xsrf=False)
    assert status == 200, body


def test_non_loopback_without_token_refuses_to_start(tmp_path: Path) -> None:
    state = tmp_path / "state"
    proc = subprocess.run(
        [sys.executable, "-m", "hyperhive", "--state-dir", str(state), "serve", "--listen", "0.0.0.0:0"],
        capture_output=True, text=True, timeout=30, env={"PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 1
    assert "not loopback" in proc.stdout + proc.stderr and "--token-file" in proc.stdout + proc.stderr
    assert not (state / "hive.sqlite").exists() and not (state / "agents").exists()  # nothing started


def test_unbindable_listen_address_fails_start_cleanly(tmp_path: Path) -> None:
    """192.0.2.1 (TEST-NET-1) is on no interface here: the bind fails before any
    actor starts, so the daemon exits (no hang on live actor threads)."""
    token = tmp_path / "token"
    token.write_text(TOKEN)
    state = tmp_path / "state"
    proc = subprocess.run(
        [sys.executable, "-m", "hyperhive", "--state-dir", str(state), "serve", "--listen", "192.0.2.1:0",
         "--token-file", str(token)], capture_output=True, text=True, timeout=30, env={"PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 1
    assert "daemon.start_failed" in proc.stdout and "cannot listen on 192.0.2.1:0" in proc.stdout
    assert not (state / "hive.sqlite").exists()


@pytest.fixture
def token_hive(tmp_path: Path) -> Iterator[Hive]:
    f = tmp_path / "token"
    f.write_text(TOKEN + "\n")
    f.chmod(0o600)
    h = Hive(tmp_path / "state", extra_args=["--token-file", str(f)]).start()
    try:
        yield h
    finally:
        h.stop()


def test_with_token_the_page_works(token_hive: Hive, browser_page: Any) -> None:
    url = token_hive.url
    assert token_hive.token == TOKEN and not (token_hive.state_dir / "run" / "operator.token").exists()
    assert fetch(url + "/api/state")[0] == 401
    assert fetch(url + "/")[0] == 401
    assert fetch(url + "/?token=wrong-token-wrong-token")[0] == 401
    assert fetch(url + "/api/state", headers={"Authorization": "Bearer wrong-token-wrong-token"})[0] == 401
    assert fetch(url + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"})[0] == 200
    assert token_hive.login_url == f"{url}/login?token={TOKEN}"
    page = browser_page
    page.goto(f"{url}/?token={TOKEN}")
    page.wait_for_selector("#conn.live")
    page.wait_for_selector('#containers .row[data-key="m1nd"]')
    assert "token" not in page.url  # redirected without it; the session cookie holds the login
    page.reload()  # no token in the URL now: the cookie carries it
    page.wait_for_selector("#conn.live")
    form = page.locator("#send-form")
    form.locator("input[name=to]").fill("m1nd")
    form.locator("textarea[name=body]").fill("hello with a token")
    form.locator("button").click()
    # POST + push: the operator's own row (m1nd's quoting reply may already be there too)
    page.locator("#flow .row", has_text="hello with a token").filter(has_text="operator→m1nd").wait_for(timeout=5000)


def test_a_nul_in_a_path_and_a_body_that_is_not_utf8_are_400s_that_change_nothing(hive: Hive) -> None:
    """Issue 12, item 5: bad input gets a clear 400, never a 500 with a traceback."""
    import urllib.error
    import urllib.request

    from support import DashSession

    for path in ("/static/a%00b", "/static/%00", "/api/journal/m1nd%00"):
        req = urllib.request.Request(hive.url + path, headers=hive.bearer)
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=10)
        assert err.value.code == 400, path
    s = DashSession(hive)
    before = hive.admin("inbox", limit=5)["messages"]
    req = urllib.request.Request(hive.url + "/send", data=b"to=m1nd&body=lone%ED%A0%80surrogate", method="POST",
                                 headers={"X-XSRF-Token": s.xsrf, "Origin": hive.url,
                                          "Content-Type": "application/x-www-form-urlencoded"})
    with pytest.raises(urllib.error.HTTPError) as err:
        s.opener.open(req, timeout=10)
    assert err.value.code == 400
    assert json.loads(err.value.read())["error"]["code"] == "bad_request"
    assert hive.admin("inbox", limit=5)["messages"] == before
    assert not [e for e in hive.log_events() if e.get("level") == "error"]
