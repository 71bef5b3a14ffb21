"""The chat page in a real browser when the database cannot keep a turn (issue 31, item 15): the
customer still reads the answer, and is told that rating is unavailable for it (no thumbs).

Debian's Chromium driven by Playwright (tests/browser_support.py): without them the module is
skipped, unless REQUIRE_BROWSER=1 (CI), where that is a failure.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tests.browser_support import (  # skips this module without a browser
    LiveServer,
    expect,
    launch,
    new_page,
    running,
    sync_playwright,
)

FAQ_QUESTION = "how do I reset my password"
pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


def test_an_unstored_answer_says_rating_is_unavailable(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("bot.storage.engine.BUSY_TIMEOUT_MS", 300)  # the lock fails it quickly
    with running(LiveServer(tmp_path)) as server, sync_playwright() as playwright:
        browser = launch(playwright)
        with new_page(browser) as page:
            page.goto(server.url + "/")
            box = page.get_by_test_id("message-input")
            box.fill(FAQ_QUESTION)
            box.press("Enter")
            kept = page.get_by_test_id("bot-message").nth(0)
            expect(kept.get_by_test_id("thumbs-up")).to_be_visible()
            expect(kept.get_by_test_id("rating-unavailable")).to_have_count(0)
            lock = sqlite3.connect(server.database, isolation_level=None)
            try:
                lock.execute("BEGIN EXCLUSIVE")  # another process holds the database
                box.fill("How can I track my order?")
                box.press("Enter")
                lost = page.get_by_test_id("bot-message").nth(1)
                expect(lost.get_by_test_id("rating-unavailable")).to_contain_text(
                    "rating is unavailable")
            finally:
                lock.rollback()
                lock.close()
            expect(lost).to_contain_text("track")  # the answer itself is shown
            expect(lost.get_by_test_id("thumbs-up")).to_have_count(0)
        browser.close()
