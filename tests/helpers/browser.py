"""A real browser for the pages a person looks at: Debian's Chromium (package `chromium`),
headless, driven by Playwright through its executable path (Playwright's own browser download
is not used). Where no Chromium is installed the tests skip, unless CONVBENCH_REQUIRE_BROWSER=1
(CI sets it, after installing the package), where they fail."""

import contextlib
import os
import shutil

import pytest

CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        message = "needs Debian's chromium (apt-get install chromium)"
        if os.environ.get("CONVBENCH_REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path


@contextlib.contextmanager
def browser_page(width: int = 1400, height: int = 1000):
    """A fresh headless page; closed with its browser afterwards."""
    sync_api = pytest.importorskip("playwright.sync_api")
    executable = chromium_path()
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        try:
            yield browser.new_page(viewport={"width": width, "height": height})
        finally:
            browser.close()
