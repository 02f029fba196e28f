"""A real browser for the pages a person looks at: Debian's Chromium (package `chromium`),
headless, driven by Playwright through its executable path (Playwright's own browser download
is not used). Where no Chromium or no Playwright is installed the tests fail, saying what to
install (CI installs Chromium in .ci/run, Playwright with the test extras)."""

import contextlib
import importlib
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
        pytest.fail("needs Debian's chromium (apt-get install chromium)")
    return path


@contextlib.contextmanager
def browser_page(width: int = 1400, height: int = 1000):
    """A fresh headless page; closed with its browser afterwards."""
    try:
        sync_api = importlib.import_module("playwright.sync_api")
    except ImportError as missing:
        pytest.fail(f"needs Playwright ({missing}): pip install -e '.[test]'")
    executable = chromium_path()
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        try:
            yield browser.new_page(viewport={"width": width, "height": height})
        finally:
            browser.close()
