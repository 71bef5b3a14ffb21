"""Shared by the real-browser tests: Debian's Chromium driven by Playwright, and the real server
on loopback. Test modules take Playwright's names from here: importing this module skips the
importing test module when Chromium or Playwright is missing, unless REQUIRE_BROWSER=1 (CI),
where that is a failure.

`playwright install` is not used. Screenshots go to the test's temp folder and to
.supportbot/screenshots/.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT, SAMPLE_FAQ

try:
    from playwright.sync_api import (
        Browser,
        Locator,
        Page,
        Playwright,
        ViewportSize,
        WebSocketRoute,
        expect,
        sync_playwright,
    )

    _PLAYWRIGHT_ERROR = ""
except ImportError as exc:  # pragma: no cover - depends on the machine
    _PLAYWRIGHT_ERROR = f"playwright is not installed ({exc})"

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
SCREENSHOTS = ROOT / ".supportbot" / "screenshots"  # .supportbot/ is gitignored
WAIT_MS = 30_000  # the first turn loads the embedder's weights into the retrieval workers
PHONE: ViewportSize = {"width": 375, "height": 740}
DESKTOP: ViewportSize = {"width": 1100, "height": 800}


__all__ = ["CHROMIUM", "DESKTOP", "PHONE", "WAIT_MS", "Browser", "LiveServer", "Locator", "Page",
           "Shots", "ViewportSize", "WebSocketRoute", "expect", "launch", "new_page", "running",
           "sync_playwright"]


def _missing() -> str:
    if _PLAYWRIGHT_ERROR:
        return _PLAYWRIGHT_ERROR
    if not CHROMIUM.is_file():
        return f"{CHROMIUM} is missing (Debian's chromium package: bash .ci/chromium.sh)"
    return ""


if _missing():
    if os.environ.get("REQUIRE_BROWSER") == "1":
        pytest.fail(f"REQUIRE_BROWSER=1, but {_missing()}", pytrace=False)
    pytest.skip(f"browser test skipped: {_missing()} (REQUIRE_BROWSER=1 makes this an error)",
                allow_module_level=True)


class LiveServer:
    """uvicorn serving create_app(settings) on 127.0.0.1 in a background thread.

    `extra` is YAML appended to the test configuration (top-level sections other than
    retrieval, storage, dialogue and web); `retrieval` is YAML lines added to its retrieval
    section, indented by two spaces.
    """

    def __init__(self, folder: Path, extra: str = "", retrieval: str = "") -> None:
        import uvicorn

        from bot.channels.web.app import create_app
        from bot.settings import load_settings

        config = folder / "supportbot.yaml"
        config.write_text(
            f"retrieval:\n  faq_path: {SAMPLE_FAQ}\n  index_dir: index\n{retrieval}"
            "storage:\n  database_url: sqlite+aiosqlite:///bot.db\n"
            "dialogue:\n  middle: clarify\n"
            f"web:\n  secret: {secrets.token_hex(32)}\n  secret_file: {folder / 'web-secret'}\n"
            # A customer needs seconds per message; this test sends them as fast as it can.
            "  drain_seconds: 2\n  burst_per_connection: 20\n"
            "  heartbeat_seconds: 1\n"  # pings the page must answer, within the test's time
            + extra,
            encoding="utf-8")
        with pytest.MonkeyPatch.context() as env:  # the developer's SUPPORTBOT_* stay out
            for name in list(os.environ):
                if name.startswith("SUPPORTBOT_"):
                    env.delenv(name)
            self.settings = load_settings(config, explicit=True)
        self.database = folder / "bot.db"
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.bind(("127.0.0.1", 0))  # a free port, held until uvicorn takes it over
        self.port = self._socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(create_app(self.settings), host="127.0.0.1",
                                                    port=self.port, log_level="warning"))
        self._thread = threading.Thread(target=self.server.run,
                                        kwargs={"sockets": [self._socket]},
                                        name="uvicorn", daemon=True)

    def start(self) -> None:
        self._thread.start()
        deadline = time.monotonic() + 120  # start-up builds the FAQ index
        while not self.server.started:
            if not self._thread.is_alive():
                raise RuntimeError("the server stopped during start-up (see the log above)")
            if time.monotonic() > deadline:
                raise TimeoutError("the server did not start within 120 s")
            time.sleep(0.05)
        ready = httpx.get(f"{self.url}/readyz", timeout=10)
        assert ready.status_code == 200, ready.text

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=30)
        self._socket.close()
        assert not self._thread.is_alive(), "the server did not stop within 30 s"


@contextmanager
def running(server: LiveServer) -> Iterator[LiveServer]:
    server.start()
    try:
        yield server
    finally:
        server.stop()


def launch(playwright: Playwright) -> Browser:
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)


@contextmanager
def new_page(browser: Browser, viewport: ViewportSize = DESKTOP) -> Iterator[Page]:
    """A page in a fresh browser context (its own cookies and storage); fails the test if the
    page's JavaScript threw."""
    context = browser.new_context(viewport=viewport)
    context.set_default_timeout(WAIT_MS)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        yield page
    finally:
        context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


class Shots:
    """Saves screenshots under the test's temp folder and .supportbot/screenshots/."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def take(self, page: Page, name: str) -> None:
        path = self.folder / f"{name}.png"
        page.screenshot(path=str(path))
        shutil.copyfile(path, SCREENSHOTS / path.name)
        print(f"screenshot: {path} (and {SCREENSHOTS / path.name})")
