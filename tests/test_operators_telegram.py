"""An operator answers a Telegram customer: the reply goes out through the Bot API (a loopback
server that speaks it), the bot stays silent while the operator holds the conversation."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from bot.channels.serve import served_app
from bot.channels.telegram.delivery import telegram_chat
from retrieval.index import FaqIndex
from tests.operator_support import PASSWORD, add_operators
from tests.telegram_server import FakeBotApi
from tests.telegram_support import ALICE, telegram_bot, tg_settings
from tests.web_support import rows

pytestmark = pytest.mark.timeout(120)


def test_a_telegram_conversation_id_names_its_chat() -> None:
    assert telegram_chat("telegram:-1001:42:0") == -1001
    assert telegram_chat("web-4f2a") is None
    assert telegram_chat("telegram:x:42:0") is None


async def test_an_operator_answers_a_telegram_customer(tmp_path: Path,
                                                       sample_index: FaqIndex) -> None:
    with FakeBotApi().running() as api:
        settings = tg_settings(tmp_path, api)
        await asyncio.to_thread(add_operators, settings, "anna")
        async with telegram_bot(settings, sample_index):
            api.send(ALICE, ALICE, "/human")
            await api.wait_for(lambda: len(api.texts(ALICE)) == 1, what="the handoff")
            conversation = f"telegram:{ALICE}:{ALICE}:0"

            def operator() -> dict[str, object]:
                with TestClient(served_app(settings, index=sample_index),
                                base_url="https://testserver") as client:
                    assert client.post("/operator/api/login", json={
                        "name": "anna", "password": PASSWORD}).status_code == 200
                    waiting = client.get("/operator/api/conversations").json()["waiting"]
                    assert [w["conversation_id"] for w in waiting] == [conversation]
                    assert client.post(f"/operator/api/conversations/{conversation}/claim"
                                       ).status_code == 200
                    typing = client.post(f"/operator/api/conversations/{conversation}/typing")
                    assert typing.status_code == 200, typing.text
                    reply = client.post(f"/operator/api/conversations/{conversation}/reply",
                                        json={"text": "Hi, Anna here. Which order is it?"})
                    assert reply.status_code == 200, reply.text
                    return dict(reply.json())

            # The web app runs on TestClient's own thread and loop; the Telegram bot on ours.
            actions = len(api.of("sendChatAction"))
            result = await asyncio.to_thread(operator)
            assert result["telegram"] == "sent"
            shown = api.of("sendChatAction")[actions:]  # the operator's "typing..."
            assert [(int(c.params["chat_id"]), c.params["action"]) for c in shown] == [
                (ALICE, "typing")]
            await api.wait_for(lambda: len(api.texts(ALICE)) == 2, what="the operator's reply")
            assert api.texts(ALICE)[1] == "anna: Hi, Anna here. Which order is it?"

            api.send(ALICE, ALICE, "It's order 1234")  # held: stored, the bot says nothing
            await api.wait_for(lambda: len(rows(settings, "SELECT id FROM messages WHERE "
                                                "role='user'")) == 2, what="the message stored")
            await asyncio.sleep(1.0)
            assert len(api.texts(ALICE)) == 2, "the bot is silent while an operator holds it"
    stored = rows(settings, "SELECT role, text FROM messages ORDER BY id")
    assert [(r.role, r.text) for r in stored] == [
        ("user", "/human"), ("bot", settings.persona.handoff_text),
        ("operator", "Hi, Anna here. Which order is it?"), ("user", "It's order 1234")]


async def test_a_reply_that_cannot_reach_telegram_is_stored_and_says_so(
        tmp_path: Path, sample_index: FaqIndex) -> None:
    with FakeBotApi().running() as api:
        settings = tg_settings(tmp_path, api)
        await asyncio.to_thread(add_operators, settings, "anna")
        async with telegram_bot(settings, sample_index):
            api.send(ALICE, ALICE, "/human")
            await api.wait_for(lambda: len(api.texts(ALICE)) == 1, what="the handoff")
        api.fail_next("sendMessage", 403, "Forbidden: bot was blocked by the user")
        conversation = f"telegram:{ALICE}:{ALICE}:0"

        def operator() -> dict[str, object]:
            with TestClient(served_app(settings, index=sample_index),
                            base_url="https://testserver") as client:
                client.post("/operator/api/login", json={"name": "anna", "password": PASSWORD})
                client.post(f"/operator/api/conversations/{conversation}/claim")
                reply = client.post(f"/operator/api/conversations/{conversation}/reply",
                                    json={"text": "Are you still there?"})
                assert reply.status_code == 200, reply.text
                return dict(reply.json())

        result = await asyncio.to_thread(operator)
    assert str(result["telegram"]).startswith("not sent: Telegram did not take the reply")
    assert "blocked by the user" in str(result["telegram"])
    [stored] = rows(settings, "SELECT text FROM messages WHERE role='operator'")
    assert stored.text == "Are you still there?"
