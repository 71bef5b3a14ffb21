"""The operator page's "Learnt" panel in a real browser, against the real server: a phrasing the
bot learnt from an operator's answer is listed, an operator removes it with one click, and the
bot stops answering from it.

Debian's Chromium driven by Playwright (tests/browser_support.py): without them the module is
skipped, unless REQUIRE_BROWSER=1 (CI), where that is a failure.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.browser_support import (  # skips this module without a browser
    WAIT_MS,
    LiveServer,
    Shots,
    expect,
    launch,
    new_page,
    running,
    sync_playwright,
)
from tests.operator_support import PASSWORD, add_operators

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]
ODD = "my plastic rectangle got stuck in the pay thingy"
ENTRY = "payment-failed"


def _taught(server: LiveServer) -> None:
    """An operator answered ODD with the entry once (trusted alone), before the server starts."""
    from bot.learning.store import SignalStore
    from bot.storage import ConversationStore

    async def record() -> None:
        store = ConversationStore(server.settings.storage.database_url)
        await store.init()
        try:
            assert await SignalStore(store, server.settings.learning).record(
                "operator", [ENTRY], ODD, "conv-taught", "operator:ben", "operator") == 1
        finally:
            await store.close()

    asyncio.run(record())


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    live = LiveServer(tmp_path)
    add_operators(live.settings, "anna")
    _taught(live)
    with running(live):
        yield live


def _ask(server: LiveServer) -> dict[str, Any]:
    response = httpx.post(f"{server.url}/v1/chat", json={"text": ODD}, timeout=60)
    assert response.status_code == 200, response.text
    return dict(response.json()["reply"])


def test_removing_a_learnt_phrasing_on_the_page_stops_the_bot_answering_it(
        server: LiveServer, tmp_path: Path) -> None:
    before = _ask(server)
    assert before["decision"] == "answer" and before["sources"][0]["id"] == ENTRY, before
    with sync_playwright() as playwright:
        browser = launch(playwright)
        with new_page(browser) as page:
            page.goto(server.url + "/operator")
            page.get_by_label("Name").fill("anna")
            page.get_by_label("Password").fill(PASSWORD)
            page.get_by_role("button", name="Sign in").click()
            item = page.get_by_test_id("learnt-item").filter(has_text=ODD)
            expect(item).to_have_attribute("data-state", "learnt", timeout=WAIT_MS)
            expect(item.get_by_test_id("learnt-by")).to_contain_text("answered by operator ben")
            expect(page.get_by_test_id("learnt-count")).to_have_text("1")
            Shots(tmp_path).take(page, "operator-learnt-panel")
            item.get_by_test_id("learnt-remove").click()
            expect(page.get_by_test_id("learnt-status")).to_contain_text("Removed")
            expect(item).to_have_attribute("data-state", "removed")
            expect(item.get_by_test_id("learnt-by")).to_contain_text("removed by anna")
            expect(item.get_by_test_id("learnt-approve")).to_be_visible()
        browser.close()
    after = _ask(server)
    assert after["decision"] != "answer" or after["sources"][0]["id"] != ENTRY, after
