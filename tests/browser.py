"""Test support: a headless Chromium (Debian's, never a downloaded one) driven
by Playwright, kept off every network but loopback.

    def test_x(browser_page): browser_page.goto("http://127.0.0.1:…/")

(registered for every test by ``pytest_plugins`` in tests/conftest.py)
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import Any

import pytest
from support import require_e2e

__all__ = ["CHROMIUM", "LAUNCH_ARGS", "browser_page", "chromium_browser"]

CHROMIUM = "/usr/bin/chromium"
LAUNCH_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
]


@pytest.fixture(scope="module")
def chromium_browser() -> Iterator[Any]:
    require_e2e("a browser (the chromium_browser fixture, tests/browser.py)")
    if shutil.which(CHROMIUM) is None:
        pytest.skip("needs Debian's chromium (apt-get install chromium; .ci/run does)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def browser_page(chromium_browser: Any) -> Iterator[Any]:
    """A fresh page (own context: no shared storage between tests)."""
    require_e2e("a browser page (the browser_page fixture, tests/browser.py)")
    context = chromium_browser.new_context()
    page = context.new_page()
    page.set_default_timeout(15_000)
    try:
        yield page
    finally:
        context.close()
