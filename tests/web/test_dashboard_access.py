"""Dashboard access (F46), acceptance item 6 of issue 6: XSRF on every POST,
refusal to start on a non-loopback address without a token, and a page
that works with the token (given once, then kept in a cookie)."""

from __future__ import annotations

import http.cookiejar
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import Hive, wait_for

TOKEN = "operator-token-for-tests-0123456789"


def fetch(url: str, data: dict[str, str] | None = None, headers: dict[str, str] | None = None,
          opener: urllib.request.OpenerDirector | None = None) -> tuple[int, bytes]:
    body = None if data is None else urllib.parse.urlencode(data).encode()
    req = urllib.request.Request(url, data=body, headers=headers or {})
    try:
        with (opener or urllib.request.build_opener()).open(req, timeout=10) as res:
            return res.status, res.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_post_without_xsrf_is_refused(hive: Hive) -> None:
    wait_for(lambda: hive.ls()["m1nd"]["state"] == "running", what="m1nd up")
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    assert fetch(hive.url + "/", opener=opener)[0] == 200  # sets the _xsrf cookie
    xsrf = next(c.value for c in jar if c.name == "_xsrf")
    status, body = fetch(hive.url + "/send", {"to": "m1nd", "body": "no token"}, opener=opener)
    assert status == 403 and b"_xsrf" in body
    status, _ = fetch(hive.url + "/stop/m1nd", {}, opener=opener)
    assert status == 403
    assert hive.ls()["m1nd"]["state"] == "running"  # the refused POST changed nothing
    # The same POST with the token goes through: it was the XSRF check that refused.
    status, body = fetch(hive.url + "/send", {"to": "m1nd", "body": "with token"},
                         headers={"X-XSRFToken": xsrf}, opener=opener)
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
    assert fetch(url + "/api/state")[0] == 401
    assert fetch(url + "/")[0] == 401
    assert fetch(url + "/api/state?token=wrong-token-wrong-token")[0] == 401
    assert fetch(url + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"})[0] == 200
    page = browser_page
    page.goto(f"{url}/?token={TOKEN}")
    page.wait_for_selector("#conn.live")
    page.wait_for_selector('#containers .row[data-key="m1nd"]')
    assert "token" not in page.url  # dropped from the address bar; the cookie holds it
    page.reload()  # no token in the URL now: the cookie carries it
    page.wait_for_selector("#conn.live")
    form = page.locator("#send-form")
    form.locator("input[name=to]").fill("m1nd")
    form.locator("textarea[name=body]").fill("hello with a token")
    form.locator("button").click()
    page.locator("#flow .row", has_text="hello with a token").wait_for(timeout=2000)  # POST + push
