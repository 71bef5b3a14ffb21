"""The Telegram channel: python-telegram-bot's real Application, over HTTP, against a small Bot
API server on 127.0.0.1 (tests/telegram_server.py); nothing reaches the internet."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.channels.telegram.markup import Pick, Rating, decode
from bot.channels.telegram.service import webhook_secret
from bot.channels.telegram.text import split_text, tg_len
from bot.errors import ChannelError, SettingsError
from bot.settings import TelegramSettings, load_settings
from retrieval.corpus import load_faq
from retrieval.embedder import SentenceTransformerEmbedder
from retrieval.index import FaqIndex
from tests.dialogue_support import NEAR_MISS
from tests.telegram_server import BOT, TOKEN, FakeBotApi
from tests.telegram_support import ALICE, BOB, telegram_bot, tg_settings
from tests.web_support import free_port, rows, running, scripted

pytestmark = pytest.mark.timeout(60)
PASSWORD = "how do I reset my password"


@pytest.fixture
def api() -> Iterator[FakeBotApi]:
    with FakeBotApi().running() as server:
        yield server


def keyboard(message: dict[str, Any]) -> list[list[dict[str, Any]]]:
    return message.get("reply_markup", {}).get("inline_keyboard", [])


def callbacks(message: dict[str, Any]) -> list[Any]:
    return [decode(b["callback_data"]) for row in keyboard(message) for b in row
            if "callback_data" in b]


# --- text and buttons, without a server -------------------------------------------------------


@pytest.mark.parametrize(("text", "limit", "expected"), [
    ("", 10, []),
    ("Short.", 10, ["Short."]),
    ("One two. Three four.", 11, ["One two.", "Three four."]),
    ("First line\nsecond line", 12, ["First line", "second line"]),
    ("aaaaaaaaaa", 4, ["aaaa", "aaaa", "aa"]),
    ("😀😀😀", 4, ["😀😀", "😀"]),  # an emoji counts two, and is never cut in half
])
def test_split_text(text: str, limit: int, expected: list[str]) -> None:
    assert split_text(text, limit) == expected


def test_a_long_text_splits_between_sentences_within_the_limit() -> None:
    text = " ".join(f"Sentence number {i} says something useful." for i in range(300))
    pieces = split_text(text)
    assert len(pieces) >= 3 and all(tg_len(p) <= 4096 for p in pieces)
    assert all(p.endswith(".") for p in pieces) and " ".join(pieces) == text


def test_callback_data_round_trips_and_fits() -> None:
    for button in (Pick(9_999_999_999, 3), Rating(9_999_999_999, 1_900_000_000, 10**12, "down")):
        assert decode(button.encode()) == button and len(button.encode().encode()) <= 64
    assert decode("f:1:2:3:x") is None and decode("p:me:1") is None and decode("zz") is None


def test_token_is_checked_at_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUPPORTBOT_TELEGRAM__TOKEN", "not-a-token")
    with pytest.raises(SettingsError, match=r"telegram\.token: not a bot token"):
        load_settings(tmp_path / "none.yaml")
    monkeypatch.setenv("SUPPORTBOT_TELEGRAM__TOKEN", TOKEN)
    assert load_settings(tmp_path / "none.yaml").telegram.token.get_secret_value() == TOKEN
    with pytest.raises(ValueError, match="needs webhook_url"):
        TelegramSettings(mode="webhook")


async def test_a_missing_or_refused_token_and_an_unreachable_api_are_clear_errors(
        tmp_path: Path, api: FakeBotApi, sample_index: FaqIndex) -> None:
    settings = tg_settings(tmp_path, api, token=None)
    with pytest.raises(SettingsError, match=r"telegram\.token: not set"):
        async with telegram_bot(settings, sample_index):
            pass
    settings = tg_settings(tmp_path, api, token="42:" + "x" * 35)  # well formed, unknown
    with pytest.raises(ChannelError, match="refused the bot token"):
        async with telegram_bot(settings, sample_index):
            pass
    settings = tg_settings(tmp_path, api, base_url=f"http://127.0.0.1:{free_port()}/bot",
                           max_retries=1)
    with pytest.raises(ChannelError, match="cannot reach the Telegram Bot API"):
        async with telegram_bot(settings, sample_index):
            pass


# --- the bot on the test server ---------------------------------------------------------------


async def test_a_question_is_answered_with_typing_and_thumbs_and_stored(
        tmp_path: Path, api: FakeBotApi, sample_index: FaqIndex) -> None:
    settings = tg_settings(tmp_path, api)
    async with telegram_bot(settings, sample_index) as service:
        assert service.username == BOT["username"]
        asked = api.send(ALICE, ALICE, PASSWORD)
        await api.wait_for(lambda: api.texts(ALICE), what="the answer")
    [answer] = api.bot_messages(ALICE)
    assert api.of("getMe") and api.of("deleteWebhook")  # polling starts by removing a webhook
    assert api.of("sendChatAction")[0].params == {"chat_id": ALICE, "action": "typing"}
    stored = rows(settings, "SELECT m.id, m.role, m.text, m.client_id, m.decision, c.id AS cid,"
                  " c.channel, c.user_id FROM messages m JOIN conversations c "
                  "ON c.id = m.conversation_id ORDER BY m.id")
    assert [(r.role, r.client_id) for r in stored] == [
        ("user", f"m{asked['message']['message_id']}"), ("bot", None)]
    assert stored[1].text == answer["text"] and stored[1].decision == "answer"
    assert "https://help.kestrel-outfitters.example/" in answer["text"]  # the FAQ's link
    assert stored[0].cid == f"telegram:{ALICE}:{ALICE}:0"
    assert (stored[0].channel, stored[0].user_id) == ("telegram", str(ALICE))
    thumbs = callbacks(answer)
    assert thumbs == [Rating(ALICE, 0, stored[1].id, "up"), Rating(ALICE, 0, stored[1].id,
                                                                     "down")]
    assert not api.of("editMessageText")  # a quick answer goes out once, complete


async def test_an_update_delivered_twice_is_answered_once(tmp_path: Path, api: FakeBotApi,
                                                          sample_index: FaqIndex) -> None:
    settings = tg_settings(tmp_path, api)
    async with telegram_bot(settings, sample_index):
        update = api.send(ALICE, ALICE, PASSWORD)
        api.redeliver(update)
        api.send(ALICE, ALICE, "/help")  # handled after both: the chat's order is kept
        await api.wait_for(lambda: len(api.texts(ALICE)) >= 2, what="the answer and the help")
    assert len(api.texts(ALICE)) == 2
    assert len(rows(settings, "SELECT id FROM messages WHERE role='user'")) == 1


async def test_thumbs_up_is_stored_as_feedback(tmp_path: Path, api: FakeBotApi,
                                               sample_index: FaqIndex) -> None:
    settings = tg_settings(tmp_path, api)
    async with telegram_bot(settings, sample_index):
        api.send(ALICE, ALICE, PASSWORD)
        await api.wait_for(lambda: api.texts(ALICE), what="the answer")
        [answer] = api.bot_messages(ALICE)
        up = keyboard(answer)[-1][0]
        assert up["text"] == "👍"
        api.press(ALICE, BOB, answer["message_id"], up["callback_data"])  # not Bob's answer
        api.press(ALICE, ALICE, answer["message_id"], up["callback_data"])
        await api.wait_for(lambda: len(api.of("answerCallbackQuery")) == 2, what="the toasts")
    toasts = [c.params["text"] for c in api.of("answerCallbackQuery")]
    assert toasts == [settings.telegram.not_yours_text, settings.telegram.feedback_text]
    [feedback] = rows(settings, "SELECT message_id, conversation_id, rating FROM feedback")
    assert feedback.rating == "up" and feedback.conversation_id == f"telegram:{ALICE}:{ALICE}:0"
    assert feedback.message_id == rows(settings, "SELECT id FROM messages WHERE role='bot'")[0].id


async def test_a_suggestion_button_picks_its_entry(tmp_path: Path, api: FakeBotApi,
                                                   sample_index: FaqIndex) -> None:
    settings = tg_settings(tmp_path, api)
    async with telegram_bot(settings, sample_index):
        api.send(ALICE, ALICE, NEAR_MISS)
        await api.wait_for(lambda: api.texts(ALICE), what="'Did you mean'")
        [clarify] = api.bot_messages(ALICE)
        picks = [b for row in keyboard(clarify) for b in row]
        assert len(picks) == 3 and all(isinstance(decode(b["callback_data"]), Pick)
                                       for b in picks)  # no thumbs under a question
        second = picks[1]
        api.press(ALICE, ALICE, clarify["message_id"], second["callback_data"])
        await api.wait_for(lambda: len(api.texts(ALICE)) == 2, what="the picked answer")
    question = second["text"].partition(". ")[2]
    turns = rows(settings, "SELECT role, text, decision, faq_ids, client_id FROM messages "
                 "ORDER BY id")
    assert turns[0].text == NEAR_MISS and turns[1].decision == "clarify"
    assert turns[2].text == question and turns[2].client_id.startswith("q")
    assert turns[3].decision == "answer" and turns[3].text == api.texts(ALICE)[1]
    offered = turns[1].faq_ids.strip('[]"').split('", "')
    assert turns[3].faq_ids == f'["{offered[1]}"]'
    assert api.of("answerCallbackQuery")


async def test_human_command_hands_off(tmp_path: Path, api: FakeBotApi,
                                       sample_index: FaqIndex) -> None:
    settings = tg_settings(tmp_path, api)
    async with telegram_bot(settings, sample_index):
        api.send(ALICE, ALICE, "/start")
        api.send(ALICE, ALICE, "/human")
        api.send(ALICE, ALICE, PASSWORD)  # now a colleague has it: the bot says so
        await api.wait_for(lambda: len(api.texts(ALICE)) == 3, what="three replies")
    persona = settings.persona
    assert api.texts(ALICE) == [persona.render(persona.greeting), persona.handoff_text,
                                persona.waiting_text]
    [conversation] = rows(settings, "SELECT status FROM conversations")
    assert conversation.status == "handoff"
    decisions = rows(settings, "SELECT decision FROM messages WHERE role='bot' ORDER BY id")
    assert [d.decision for d in decisions] == ["handoff", "waiting"]
    asked = rows(settings, "SELECT text FROM messages WHERE role='user' ORDER BY id")
    assert [a.text for a in asked] == ["/human", PASSWORD]  # stored as the customer typed it


async def test_reset_starts_a_new_conversation_that_survives_a_restart(
        tmp_path: Path, api: FakeBotApi, sample_index: FaqIndex) -> None:
    settings = tg_settings(tmp_path, api)
    async with telegram_bot(settings, sample_index):
        api.send(ALICE, ALICE, PASSWORD)
        api.send(ALICE, ALICE, "/reset")
        await api.wait_for(lambda: len(api.texts(ALICE)) == 2, what="two replies")
    async with telegram_bot(settings, sample_index):  # the state file keeps the new one
        api.send(ALICE, ALICE, PASSWORD)
        await api.wait_for(lambda: len(api.texts(ALICE)) == 3, what="the third reply")
    assert api.texts(ALICE)[1] == settings.telegram.reset_text
    ids = [r.conversation_id for r in rows(settings, "SELECT conversation_id FROM messages "
                                           "WHERE role='user' ORDER BY id")]
    assert ids[0].endswith(":0") and ids[1] != ids[0] and ids[1].startswith(f"telegram:{ALICE}")


async def test_photos_and_stickers_get_a_polite_text_only_reply(
        tmp_path: Path, api: FakeBotApi, sample_index: FaqIndex) -> None:
    settings = tg_settings(tmp_path, api)
    async with telegram_bot(settings, sample_index):
        api.send(ALICE, ALICE, photo=[{"file_id": "p1", "file_unique_id": "u1", "width": 90,
                                       "height": 90}], caption="what is this?")
        api.send(ALICE, ALICE, sticker={"file_id": "s1", "file_unique_id": "u2", "width": 512,
                                        "height": 512, "is_animated": False,
                                        "is_video": False, "type": "regular"})
        await api.wait_for(lambda: len(api.texts(ALICE)) == 2, what="two replies")
    assert api.texts(ALICE) == [settings.telegram.text_only_text] * 2
    assert rows(settings, "SELECT id FROM messages") == []  # nothing for the core to store


async def test_in_a_group_only_mentions_and_replies_are_answered(
        tmp_path: Path, api: FakeBotApi, sample_index: FaqIndex) -> None:
    settings = tg_settings(tmp_path, api)
    group = -100
    async with telegram_bot(settings, sample_index):
        api.send(group, ALICE, PASSWORD, group=True)  # people talking among themselves
        api.send(group, ALICE, "nice weather", group=True,
                 photo=[{"file_id": "p", "file_unique_id": "u", "width": 1, "height": 1}])
        mentioned = api.send(group, BOB, f"@{BOT['username']} {PASSWORD}", group=True)
        await api.wait_for(lambda: api.texts(group), what="the answer to the mention")
        [answer] = api.bot_messages(group)
        api.send(group, BOB, "how can I track my order?", group=True,
                 reply_to=answer["message_id"])  # a reply to the bot is addressed to it
        await api.wait_for(lambda: len(api.texts(group)) == 2, what="the answer to the reply")
    assert answer["reply_to_message"]["message_id"] == mentioned["message"]["message_id"]
    users = rows(settings, "SELECT c.user_id, m.text FROM messages m JOIN conversations c "
                 "ON c.id = m.conversation_id WHERE m.role='user' ORDER BY m.id")
    assert [(u.user_id, u.text) for u in users] == [(str(BOB), PASSWORD),
                                                    (str(BOB), "how can I track my order?")]


async def test_edited_messages_are_ignored_unless_set(tmp_path: Path, api: FakeBotApi,
                                                      sample_index: FaqIndex) -> None:
    settings = tg_settings(tmp_path, api)
    async with telegram_bot(settings, sample_index):
        first = api.send(ALICE, ALICE, "how do I reset my pasword")
        await api.wait_for(lambda: api.texts(ALICE), what="the answer")
        api.send(ALICE, ALICE, PASSWORD, edit_of=first["message"]["message_id"])
        api.send(ALICE, ALICE, "/help")
        await api.wait_for(lambda: len(api.texts(ALICE)) == 2, what="the help")
    assert api.texts(ALICE)[1] == settings.persona.render(settings.telegram.help_text)
    settings = tg_settings(tmp_path / "edits", api, answer_edited=True)
    (tmp_path / "edits").mkdir()
    async with telegram_bot(settings, sample_index):
        api.send(BOB, BOB, PASSWORD, edit_of=first["message"]["message_id"])
        await api.wait_for(lambda: api.texts(BOB), what="the answer to the edit")
    [edit] = rows(settings, "SELECT client_id FROM messages WHERE role='user'")
    assert edit.client_id.startswith(f"m{first['message']['message_id']}e")


async def test_retry_after_on_send_message_is_retried(tmp_path: Path, api: FakeBotApi,
                                                      sample_index: FaqIndex) -> None:
    settings = tg_settings(tmp_path, api)
    api.fail_next("sendMessage", 429, "Too Many Requests: retry after 1", retry_after=1)
    async with telegram_bot(settings, sample_index):
        api.send(ALICE, ALICE, PASSWORD)
        await api.wait_for(lambda: api.texts(ALICE), what="the answer")
    first, second = api.of("sendMessage")
    assert second.at - first.at >= 1.0 and first.params["text"] == second.params["text"]
    assert len(rows(settings, "SELECT id FROM messages WHERE role='bot'")) == 1


async def test_one_bad_update_does_not_stop_the_bot(tmp_path: Path, api: FakeBotApi,
                                                    sample_index: FaqIndex,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    settings = tg_settings(tmp_path, api)
    api.fail_next("sendMessage", 400, "Bad Request: chat not found")  # not retried
    async with telegram_bot(settings, sample_index):
        api.send(ALICE, ALICE, PASSWORD)
        await api.wait_for(lambda: len(api.of("sendMessage")) == 1, what="the failed send")
        api.send(BOB, BOB, PASSWORD)
        await api.wait_for(lambda: api.texts(BOB), what="the next chat's answer")
    assert not api.texts(ALICE)
    assert any("failed: badrequest: chat not found" in r.getMessage().lower()
               for r in caplog.records)


@pytest.mark.slow
async def test_twenty_chats_at_once_lose_nothing_and_keep_order(
        tmp_path: Path, api: FakeBotApi, sample_index: FaqIndex) -> None:
    settings = tg_settings(tmp_path, api)
    questions = [PASSWORD, "how can I track my order?", "How do I cancel my order?"]
    chats = range(2001, 2021)
    async with telegram_bot(settings, sample_index) as service:
        for question in questions:  # every chat's three messages arrive at once
            for chat in chats:
                api.send(chat, chat, question)
        await api.wait_for(lambda: all(len(api.texts(c)) == 3 for c in chats), timeout=45,
                           what="three answers in every chat")
        processor = service.app.update_processor
    asked = rows(settings, "SELECT m.text, c.user_id, m.id FROM messages m JOIN conversations c"
                 " ON c.id = m.conversation_id WHERE m.role='user' ORDER BY m.id")
    answers = {r.id: r.text for r in rows(settings, "SELECT id, text FROM messages "
                                           "WHERE role='bot'")}
    assert len(asked) == 60 and len(answers) == 60
    for chat in chats:
        assert [r.text for r in asked if r.user_id == str(chat)] == questions
    expected = [api.texts(chats[0])[i] for i in range(3)]
    assert len(set(expected)) == 3
    assert all(api.texts(c) == expected for c in chats)  # each chat in its own order
    assert processor.peak > 1  # different chats were handled at the same time


@pytest.mark.slow
async def test_a_generated_answer_streams_by_editing_one_message(
        tmp_path: Path, api: FakeBotApi, sample_index: FaqIndex) -> None:
    answer = ("You can send items back within 14 days of registering the return. To return "
              'items, go to "My orders" and click "Return items". Then select the items and a '
              "reason.")
    settings = tg_settings(tmp_path, api, sample_index, generate=True,
                           edit_interval_seconds=0.3)
    settings.dialogue.min_grounding = 0.0  # every sentence is shown: this tests the showing
    _, loader = scripted(answer, seconds_per_token=0.06)
    async with telegram_bot(settings, sample_index, loader):
        started = time.monotonic()
        api.send(ALICE, ALICE, NEAR_MISS)
        await api.wait_for(lambda: api.texts(ALICE) and callbacks(api.bot_messages(ALICE)[0]),
                           what="the finished answer")
        took = time.monotonic() - started
    [message] = api.bot_messages(ALICE)
    [stored] = rows(settings, "SELECT text, decision, meta FROM messages WHERE role='bot'")
    assert stored.decision == "generate", stored.meta
    assert message["text"] == stored.text
    sends, edits = api.of("sendMessage"), api.of("editMessageText")
    assert len(sends) == 1 and sends[0].params["text"] != stored.text, stored.meta
    assert 1 <= len(edits) <= took / 0.3 + 2  # never more often than the interval
    # The paced shows: the send and each edit before the last. The last edit is the final show,
    # made when the turn ends, not on the interval. At 0.06 s a token the answer takes ~2 s, so
    # there is a paced edit to check: an empty list would prove nothing.
    gaps = [b.at - a.at for a, b in zip([sends[0], *edits], edits[:-1], strict=False)]
    assert gaps, (len(edits), took)
    assert all(gap >= 0.25 for gap in gaps), gaps


async def test_a_long_answer_is_split_on_sentences(tmp_path: Path, api: FakeBotApi,
                                                   minilm: SentenceTransformerEmbedder) -> None:
    long_answer = " ".join(f"Step {i}: open the tent bag, take out pole {i} and connect it "
                           f"to the hub marked {i}." for i in range(1, 90))
    faq = tmp_path / "faq.yaml"
    faq.write_text("entries:\n  - id: pitch-tent\n    questions: [How do I pitch the tent?]\n"
                   f"    answer: '{long_answer}'\n    link: https://help.example/tent\n",
                   encoding="utf-8")
    index = FaqIndex.build(load_faq(faq), minilm)
    settings = tg_settings(tmp_path, api)
    async with telegram_bot(settings, index):
        api.send(ALICE, ALICE, "How do I pitch the tent?")
        await api.wait_for(lambda: len(api.texts(ALICE)) >= 2 and
                           callbacks(api.bot_messages(ALICE)[-1]), what="the split answer")
    messages = api.bot_messages(ALICE)
    [stored] = rows(settings, "SELECT text FROM messages WHERE role='bot'")
    assert len(stored.text) > 4096 and len(messages) == 2
    assert all(tg_len(m["text"]) <= 4096 for m in messages)
    assert messages[0]["text"].endswith(".") and messages[1]["text"].startswith("Step ")
    shown = " ".join(m["text"] for m in messages)
    assert shown.split() == stored.text.split()  # all of it, cut only at whitespace
    assert not callbacks(messages[0]) and callbacks(messages[1])  # buttons on the last only


# --- webhooks --------------------------------------------------------------------------------


def update_json(api: FakeBotApi, chat: int, text: str) -> dict[str, Any]:
    update = api.send(chat, chat, text)
    with api.lock:
        api.updates.clear()  # delivered by webhook, not by getUpdates
    return update


async def test_the_webhook_refuses_a_wrong_secret(tmp_path: Path, api: FakeBotApi,
                                                  sample_index: FaqIndex) -> None:
    port = free_port()
    settings = tg_settings(tmp_path, api, mode="webhook", webhook_port=port,
                           webhook_url="https://bot.example.com/telegram/webhook")
    url = f"http://127.0.0.1:{port}/telegram/webhook"
    async with telegram_bot(settings, sample_index), httpx.AsyncClient() as client:
        [hook] = api.of("setWebhook")
        assert hook.params["url"] == "https://bot.example.com/telegram/webhook"
        secret = hook.params["secret_token"]
        assert secret == webhook_secret(settings.telegram)
        update = update_json(api, ALICE, PASSWORD)
        wrong = await client.post(url, json=update,
                                  headers={"X-Telegram-Bot-Api-Secret-Token": "guess"})
        missing = await client.post(url, json=update)
        assert wrong.status_code == missing.status_code == 403
        right = await client.post(url, json=update,
                                  headers={"X-Telegram-Bot-Api-Secret-Token": secret})
        assert right.status_code == 200
        await api.wait_for(lambda: api.texts(ALICE), what="the answer by webhook")
    assert not api.of("getUpdates")
    assert len(rows(settings, "SELECT id FROM messages WHERE role='user'")) == 1


async def test_the_webhook_can_share_the_web_servers_port(tmp_path: Path, api: FakeBotApi,
                                                          sample_index: FaqIndex) -> None:
    from bot.channels.serve import served_app

    settings = tg_settings(tmp_path, api, mode="webhook", webhook_share_web_port=True,
                           webhook_secret="s3cret-for_the-test",
                           webhook_url="https://bot.example.com/telegram/webhook")
    with running(served_app(settings, index=sample_index)) as (address, _):
        url = f"http://{address}/telegram/webhook"
        async with httpx.AsyncClient() as client:
            update = update_json(api, ALICE, PASSWORD)
            wrong = await client.post(url, json=update,
                                      headers={"X-Telegram-Bot-Api-Secret-Token": "guess"})
            assert wrong.status_code == 403
            right = await client.post(url, json=update, headers={
                "X-Telegram-Bot-Api-Secret-Token": "s3cret-for_the-test"})
            assert right.status_code == 200
            await api.wait_for(lambda: api.texts(ALICE), what="the answer by shared webhook")
            metrics = (await client.get(f"http://{address}/metrics")).text
    assert api.of("setWebhook")[0].params["secret_token"] == "s3cret-for_the-test"
    assert 'supportbot_turns_total{channel="telegram",decision="answer"} 1.0' in metrics


# --- the command -----------------------------------------------------------------------------


def test_the_command_refuses_a_missing_or_malformed_token_before_starting(
        config_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from bot.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["--config", str(config_file), "telegram"])
    assert result.exit_code == 1 and "telegram.token: not set" in result.stderr
    monkeypatch.setenv("SUPPORTBOT_TELEGRAM__TOKEN", "12345:short")
    result = runner.invoke(app, ["--config", str(config_file), "telegram"])
    assert result.exit_code == 1 and "not a bot token" in result.stderr
    assert "Traceback" not in result.stderr and not (config_file.parent / "index").exists()


@pytest.mark.slow
def test_the_command_checks_the_token_with_get_me(config_file: Path, api: FakeBotApi,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from bot.cli import app

    monkeypatch.setenv("SUPPORTBOT_TELEGRAM__TOKEN", "42:" + "x" * 35)  # well formed, unknown
    monkeypatch.setenv("SUPPORTBOT_TELEGRAM__BASE_URL", api.base_url)
    monkeypatch.setenv("SUPPORTBOT_TELEGRAM__STATE_FILE", str(config_file.parent / "tg.pickle"))
    result = CliRunner().invoke(app, ["--config", str(config_file), "telegram"])
    assert result.exit_code == 1, result.output
    assert "Telegram refused the bot token" in result.stderr and "Traceback" not in result.stderr
    assert [c.method for c in api.calls] == ["getMe"]


async def test_retry_after_without_the_throttle_and_network_errors_are_retried(
        tmp_path: Path, api: FakeBotApi, sample_index: FaqIndex) -> None:
    settings = tg_settings(tmp_path, api, rate_limit=False)
    api.fail_next("sendMessage", 429, "Too Many Requests: retry after 1", retry_after=1)
    api.fail_next("sendMessage", 502, "Bad Gateway")  # a network error: backoff 0.1 s
    async with telegram_bot(settings, sample_index) as service:
        api.send(ALICE, ALICE, PASSWORD)
        await api.wait_for(lambda: api.texts(ALICE), what="the answer")
        assert service.app.bot.rate_limiter.retried == 2
    first, second, third = api.of("sendMessage")
    assert second.at - first.at >= 1.0 and third.params["text"] == first.params["text"]
