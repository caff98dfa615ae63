"""Pages in Debian's Chromium, driven by Playwright's Python package (never a downloaded
browser). `chromium()` gives a browser; `screenshot()` keeps what a person sees as an
artefact under tests/artefacts/ (git-ignored)."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path

from playwright.sync_api import Browser, Page, sync_playwright

CHROMIUM = "/usr/bin/chromium"
ARTEFACTS = Path(__file__).with_name("artefacts")
# Headless on a machine with no screen and a closed network: without the background-
# networking flags Chromium keeps opening connections the network refuses.
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
MEDIA_FLAGS = ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
               "--allow-loopback-in-peer-connection",
               "--autoplay-policy=no-user-gesture-required"]


@contextlib.contextmanager
def chromium(*extra_flags: str) -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                             args=[*FLAGS, *extra_flags])
        try:
            yield browser
        finally:
            browser.close()


def screenshot(page: Page, name: str) -> Path:
    """Save the page as tests/artefacts/<name>.png; the name says what it shows."""
    ARTEFACTS.mkdir(exist_ok=True)
    path = ARTEFACTS / f"{re.sub(r'[^A-Za-z0-9_.-]', '-', name)}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def sign_in(page: Page, site: str, name: str, password: str, then: str = "/desk") -> None:
    """Sign in on the login page as a person would, and wait for the page `then`."""
    page.goto(f"{site}/login?next={then}")
    page.get_by_label("用户名").fill(name)
    page.get_by_label("密码").fill(password)
    page.get_by_role("button", name="登录").click()
    page.wait_for_url(f"{site}{then}")
