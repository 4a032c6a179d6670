"""Headless Debian Chromium driven by Playwright, with every console message and page error recorded."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

CHROMIUM = os.environ.get("SIGNALBOARD_CHROMIUM", "/usr/bin/chromium")
# Debian's chromium as is: no sandbox (root in CI), no GPU, and none of its own network chatter.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
API_KEY = "test-api-key-1-0123456789"  # from tests/server.py's TEST_ENV


@dataclass
class ConsoleLog:
    """What the page said: console messages by type, and uncaught errors."""

    messages: list[tuple[str, str]] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)

    def errors(self) -> list[str]:
        return [text for kind, text in self.messages if kind in ("error", "warning")] + self.page_errors

    def mark(self) -> int:
        return len(self.messages)


@pytest.fixture(scope="module")
def browser():
    if not shutil.which(CHROMIUM):
        pytest.fail(f"{CHROMIUM} not found: scripts/setup_test_env.sh installs Debian's chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def open_page(browser) -> Iterator:
    """open_page(width, height) -> (page, console log); every context is closed after the test."""
    contexts = []

    def open_(width: int = 1400, height: int = 1000):
        context = browser.new_context(viewport={"width": width, "height": height})
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(10_000)
        log = ConsoleLog()
        page.on("console", lambda message: log.messages.append((message.type, message.text)))
        page.on("pageerror", lambda error: log.page_errors.append(str(error)))
        return page, log

    yield open_
    for context in contexts:
        context.close()


def log_in(page, url: str, password: str = API_KEY) -> None:
    page.goto(url + "/")
    assert page.url == url + "/login"
    page.fill("#password", password)
    page.click("button[type=submit]")
    page.wait_for_url(url + "/")
    page.wait_for_selector("#connection-state[data-state=connected]")
