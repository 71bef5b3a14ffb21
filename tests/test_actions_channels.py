"""Actions on every channel end to end (issue 34): the web socket and REST (server-sent events)
on a real uvicorn, Telegram over the loopback Bot API server, and the chat page in a real
browser, each calling a recording demo shop on loopback; the 'looking it up' status reaches
the customer before the reply (a `working` frame or event, typing on Telegram).

Every server here runs on loopback and is stopped by the test that started it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from bot.channels.web import create_app
from bot.settings import Settings
from retrieval.embedder import SentenceTransformerEmbedder
from retrieval.index import FaqIndex
from tests.actions_e2e_support import (
    ASK_ORDER,
    SHIPPED,
    Shop,
    actions_file,
    actions_settings,
    build_index,
    demo_shop,
    point_at,
    shared_folder,
    use_actions,
)
from tests.telegram_server import FakeBotApi
from tests.telegram_support import ALICE, telegram_bot, tg_settings
from tests.web_support import running

pytestmark = [pytest.mark.timeout(180)]
WAIT = 60.0  # seconds any one frame may take on a busy 2-core machine


@pytest.fixture(scope="module")
def actions_index(tmp_path_factory: pytest.TempPathFactory,
                  minilm: SentenceTransformerEmbedder) -> FaqIndex:
    """The sample FAQ and the shared actions, indexed once (or opened, when the dialogue
    module built it first)."""
    return build_index(tmp_path_factory, minilm)


@pytest.fixture
def shop(monkeypatch: pytest.MonkeyPatch) -> Iterator[Shop]:
    with demo_shop() as running_shop:
        point_at(monkeypatch, running_shop)
        yield running_shop


@pytest.fixture
def settings(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, shop: Shop) -> Settings:
    return actions_settings(tmp_path, shared_folder(tmp_path_factory), shop.host)


@pytest.fixture
def server(settings: Settings, actions_index: FaqIndex) -> Iterator[str]:
    """The web app on a real uvicorn on loopback; its host:port."""
    with running(create_app(settings, index=actions_index.copy())) as (address, _):
        yield address


async def _frames(address: str, text: str) -> list[dict[str, Any]]:
    """The frames after sending `text` on a new web socket, up to the reply (pings left out)."""
    frames: list[dict[str, Any]] = []
    async with connect(f"ws://{address}/ws") as ws:
        hello = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
        assert hello["type"] == "hello", hello
        await ws.send(json.dumps({"type": "message", "text": text}))
        while not frames or frames[-1]["type"] != "reply":
            frame = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
            if frame["type"] != "ping":
                frames.append(frame)
    return frames


async def test_the_web_socket_sends_working_then_the_reply(server: str, shop: Shop,
                                                           settings: Settings) -> None:
    frames = await _frames(server, "has KO-123456 shipped")
    kinds = [f["type"] for f in frames]
    assert kinds[0] == "working" and kinds[-1] == "reply" and set(kinds[1:-1]) <= {"token"}
    working, reply = frames[0], frames[-1]
    assert working["kind"] == "looking_up"
    assert working["text"] == settings.persona.render(settings.persona.looking_up_text)
    assert reply["decision"] == "action" and reply["text"] == SHIPPED
    assert working["text"] not in reply["text"]
    assert shop.paths() == ["/orders/KO-123456"]
    metrics = httpx.get(f"http://{server}/metrics", timeout=10).text
    # turns by decision; a counter of the action calls themselves does not exist yet
    assert 'supportbot_turns_total{channel="web",decision="action"} 1.0' in metrics, metrics


async def test_rest_streams_a_working_event(server: str, shop: Shop) -> None:
    async with httpx.AsyncClient(timeout=WAIT) as client, client.stream(
            "POST", f"http://{server}/v1/chat",
            json={"text": "has KO-123456 shipped", "stream": True}) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        body = "".join([piece async for piece in response.aiter_text()])
    events = [(block.split("\n")[0].removeprefix("event: "),
               json.loads(block.split("\n")[1].removeprefix("data: ")))
              for block in body.strip().split("\n\n")]
    kinds = [kind for kind, _ in events]
    assert kinds[:2] == ["hello", "working"] and kinds[-1] == "reply", kinds
    assert events[1][1]["kind"] == "looking_up"
    assert events[-1][1]["decision"] == "action" and events[-1][1]["text"] == SHIPPED
    assert shop.paths() == ["/orders/KO-123456"]


async def test_telegram_asks_then_answers_from_the_api(
        tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, shop: Shop,
        actions_index: FaqIndex) -> None:
    with FakeBotApi().running() as api:
        settings = use_actions(tg_settings(tmp_path, api), shared_folder(tmp_path_factory),
                               shop.host)
        async with telegram_bot(settings, actions_index.copy()):
            api.send(ALICE, ALICE, "where is my order")
            await api.wait_for(lambda: len(api.texts(ALICE)) == 1, WAIT, "the question")
            assert api.texts(ALICE) == [ASK_ORDER] and shop.paths() == []
            typing_before = len(api.of("sendChatAction"))
            api.send(ALICE, ALICE, "KO-123456")
            await api.wait_for(lambda: len(api.texts(ALICE)) == 2, WAIT, "the answer")
    assert api.texts(ALICE)[1] == SHIPPED
    assert shop.paths() == ["/orders/KO-123456"]
    typing = api.of("sendChatAction")[typing_before:]
    assert typing and typing[0].params == {"chat_id": ALICE, "action": "typing"}


@pytest.mark.slow
def test_the_chat_page_looks_up_an_order(tmp_path: Path, shop: Shop) -> None:
    from tests import browser_support as web  # skips this test without a browser

    folder = tmp_path / "page"
    folder.mkdir()
    extra = (f"actions:\n  path: {actions_file(folder)}\n  demo_shop: false\n"
             f"  allowed_hosts: ['{shop.host}']\n")
    with web.running(web.LiveServer(folder, extra=extra)) as live, \
            web.sync_playwright() as playwright:
        browser = web.launch(playwright)
        try:
            with web.new_page(browser) as page:
                page.goto(live.url + "/")
                box = page.get_by_test_id("message-input")
                for n, text in enumerate(("where is my order", "KO-123456"), start=1):
                    box.fill(text)
                    box.press("Enter")
                    messages = page.get_by_test_id("bot-message")
                    web.expect(messages).to_have_count(n)
                    web.expect(page.get_by_test_id("bot-typing")).to_have_count(0)
                web.expect(messages.nth(0)).to_contain_text("What's your order number?")
                web.expect(messages.nth(1)).to_contain_text("Order KO-123456 has shipped")
                web.expect(page.get_by_test_id("bot-working")).to_have_count(0)
                web.Shots(tmp_path).take(page, "actions-order-status")
        finally:
            browser.close()
    assert shop.paths() == ["/orders/KO-123456"]
