"""Issue 31, customer data: PII that reached storage, two redactors, order numbers taken for
phone numbers, a world-readable database, and redaction on the event loop."""

from __future__ import annotations

import asyncio
import json
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import JSON, String, Text
from typer.testing import CliRunner

from bot.channels.web import create_app
from bot.dialogue import DialogueManager
from bot.runtime import safety_layer
from bot.safety.layer import SafetyLayer
from bot.settings import Settings
from bot.storage import ConversationStore
from bot.storage.models import Base
from bot.types import BotReply, Decision, UserMessage
from retrieval.index import FaqIndex
from tests.dialogue_support import collect
from tests.web_support import rows, web_settings

pytestmark = pytest.mark.timeout(120)
FAQ_QUESTION = "how do I reset my password"
# Every kind the two redactors used to disagree on: labels, a Mastercard 2-series number, a
# lower-case name, and an order number that is not a phone number.
TEXT = ("mail jane.doe@example.com or call +44 20 7946 0958, card 2221 0000 0000 0009, "
        "my name is jane doe, order number 1234567890")
REDACTED = ("mail <EMAIL_ADDRESS> or call <PHONE_NUMBER>, card <CREDIT_CARD>, "
            "my name is <PERSON>, order number 1234567890")
SECRETS = ("jane.doe", "7946", "2221", "jane doe", "4111")


@pytest.fixture(scope="module")
def safety(sample_index_shared: FaqIndex) -> SafetyLayer:
    layer = safety_layer(Settings(), sample_index_shared)
    assert layer is not None
    return layer


@pytest.fixture
def manager(store: ConversationStore, sample_index: FaqIndex,
            safety: SafetyLayer) -> Iterator[DialogueManager]:
    settings = Settings()
    dm = DialogueManager(sample_index, store, settings.persona, settings.retrieval,
                         settings.dialogue, safety=safety)
    yield dm
    dm.close()


async def stored_texts(store: ConversationStore, conversation_id: str) -> list[str]:
    return [m.text for m, _ in await store.transcript(conversation_id)]


# --- item 2: one redactor -------------------------------------------------------------------

async def test_storage_export_and_training_redact_alike(manager: DialogueManager,
                                                        store: ConversationStore,
                                                        tmp_path: Path) -> None:
    """The same text stored by a turn, exported by `supportbot export` and cleaned for training
    comes out the same, with the same labels."""
    from training.clean import CleanConfig, clean
    from training.report import DataReport
    from training.types import Conversation, Turn

    await collect(manager, UserMessage(TEXT, "c-stored", "test", "u"))
    stored = (await stored_texts(store, "c-stored"))[0]

    # a turn stored raw (as by a build without redaction), then exported by the CLI
    message = UserMessage(TEXT, "c-raw", "test", "u")
    bot_id = await store.record_turn(message, BotReply("Happy to help.", Decision.ANSWER,
                                                       "c-raw"))
    assert await store.record_feedback("c-raw", bot_id, "up")
    config = tmp_path / "supportbot.yaml"
    config.write_text(f"storage:\n  database_url: sqlite+aiosqlite:///{tmp_path}/bot.db\n",
                      encoding="utf-8")
    out = tmp_path / "export.jsonl"
    from bot.cli import app

    result = await asyncio.to_thread(CliRunner().invoke, app,
                                     ["--config", str(config), "export", "--out", str(out)])
    assert result.exit_code == 0, result.output
    exported = [m["content"] for line in out.read_text().splitlines()
                for m in json.loads(line)["messages"] if m["role"] == "user"]

    report = DataReport()
    [cleaned] = clean([Conversation("t", (Turn("user", TEXT), Turn("assistant", "ok")))],
                      CleanConfig(), report)
    trained = cleaned.turns[0].content

    assert stored == exported[0] == trained == REDACTED
    assert set(report.redacted) == {"EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "PERSON"}


# --- item 1: every stored free-text field is redacted ---------------------------------------

def test_feedback_comment_and_client_id_are_redacted_over_rest(tmp_path: Path,
                                                               sample_index: FaqIndex) -> None:
    settings = web_settings(tmp_path)
    with TestClient(create_app(settings, index=sample_index)) as client:
        first = client.post("/v1/chat", json={"text": FAQ_QUESTION,
                                              "client_id": "jane.doe@example.com"}).json()
        conversation, token = first["conversation_id"], first["token"]
        again = client.post("/v1/chat", json={"text": FAQ_QUESTION, "token": token,
                                              "conversation_id": conversation,
                                              "client_id": "jane.doe@example.com"}).json()
        assert again["reply"]["message_id"] == first["reply"]["message_id"]  # still a re-send
        rated = client.post("/v1/feedback", json={
            "conversation_id": conversation, "token": token,
            "message_id": first["reply"]["message_id"], "rating": "down",
            "comment": "my card 4111111111111111, mail jane.doe@example.com"})
        assert rated.status_code == 200
        seen = client.get(f"/v1/conversations/{conversation}",
                          headers={"X-Conversation-Token": token})
    assert "jane.doe" not in seen.text
    [(comment,)] = rows(settings, "SELECT comment FROM feedback")
    assert comment == "my card <CREDIT_CARD>, mail <EMAIL_ADDRESS>"
    client_ids = [r[0] for r in rows(settings, "SELECT client_id FROM messages")
                  if r[0] is not None]
    assert client_ids and all(c.startswith("<EMAIL_ADDRESS>#") for c in client_ids)


async def test_a_lower_case_name_is_not_stored(manager: DialogueManager,
                                               store: ConversationStore) -> None:
    await collect(manager, UserMessage("hi, my name is jane doe and my parcel is late",
                                       "c-name", "test", "u"))
    stored = (await stored_texts(store, "c-name"))[0]
    assert stored == "hi, my name is <PERSON> and my parcel is late"


# Every String, Text and JSON column is decided: redacted by the one redactor, or not free
# text. A new text column fails this test until it is put in one of them.
REDACTED_COLUMNS = {
    "messages.text": "the customer's and the bot's text (bot/dialogue/persistence.py redacted); "
                     "operators' own replies are staff text, stored as typed",
    "messages.client_id": "customer-given: redacted, plus a digest so ids stay apart",
    "messages.meta": "may quote the message (errors, candidates): redact_data",
    "messages.verdicts": "guards' reasons may quote the message: redact_data",
    "feedback.comment": "the customer's comment (DialogueManager.feedback)",
    # stored only when the redactor changes nothing in it (bot/learning/learner.py _learnable)
    "learning_signals.wording": "a customer's question, from the redacted message, PII-free",
}
NOT_FREE_TEXT = {
    "conversations.id": "an id the server makes",
    "conversations.channel": "a channel's name, set by code",
    "conversations.user_id": "a channel's user id (web, rest, a Telegram user number)",
    "conversations.status": "an enum",
    "conversations.claimed_by": "an operator account name (staff, not a customer)",
    "messages.conversation_id": "an id the server makes",
    "messages.role": "an enum",
    "messages.decision": "an enum",
    "messages.faq_ids": "FAQ entry ids",
    "messages.scores": "numbers",
    "feedback.conversation_id": "an id the server makes",
    "feedback.rating": "an enum",
    "operators.name": "an operator account name",
    "operators.password_hash": "an argon2 hash",
    "operator_actions.operator": "an operator account name",
    "operator_actions.action": "an enum",
    "operator_actions.conversation_id": "an id the server makes",
    "faq_additions.entry_id": "an FAQ entry id",
    "faq_additions.operator": "an operator account name",
    "faq_additions.conversation_id": "an id the server makes",
    "faq_additions.removed_by": "an operator account name",
    # FAQ content operators write for every customer to read (taken from redacted messages)
    "faq_additions.question": "the company's FAQ text, written by staff",
    "faq_additions.answer": "the company's FAQ text, written by staff",
    "originals.conversation_id": "an id the server makes",
    "login_failures.key": "a digest of an operator name and an address",
    "learning_signals.kind": "an enum",
    "learning_signals.entry_id": "an FAQ entry id",
    "learning_signals.conversation_id": "an id the server makes",
    "learning_signals.source": "a keyed digest of a client address, or a Telegram user number",
    "learning_signals.channel": "a channel's name, set by code",
    "learning_reviews.entry_id": "an FAQ entry id",
    "learning_reviews.decision": "an enum",
    "learning_reviews.operator": "an operator account name",
    # a signal's (PII-free) wording an operator approved or removed: the company's FAQ text
    "learning_reviews.wording": "a reviewed phrasing, copied from learning_signals.wording",
}
# Unredacted on purpose, and bounded: read by the operator holding the conversation only, deleted
# after storage.original_text_hours (tests/test_hostile_privacy.py, docs/privacy.md).
KEPT_AS_WRITTEN = {
    "originals.text": "the customer's message as written, for the operator who helps them",
}


def test_every_stored_text_column_is_decided() -> None:
    columns = {f"{table.name}.{column.name}" for table in Base.metadata.sorted_tables
               for column in table.columns if isinstance(column.type, String | Text | JSON)}
    decided = (REDACTED_COLUMNS, NOT_FREE_TEXT, KEPT_AS_WRITTEN)
    undecided = columns - set().union(*decided)
    assert not undecided, f"text columns neither redacted nor declared not free text: {undecided}"
    assert sum(len(d) for d in decided) == len(set().union(*decided))  # each decided once
    assert set().union(*decided) <= columns  # no stale names


# --- item 3: order numbers are not phone numbers --------------------------------------------

@pytest.mark.parametrize(("text", "expected"), [
    ("order number 1234567890", "order number 1234567890"),
    ("my invoice is 2265364190, charged twice", "my invoice is 2265364190, charged twice"),
    ("support ticket #7177021643 still open", "support ticket #7177021643 still open"),
    ("tracking 1Z999AA10123456784", "tracking 1Z999AA10123456784"),
    ("call me on 2125550134", "call me on <PHONE_NUMBER>"),
    ("my number is (212) 555-0134", "my number is <PHONE_NUMBER>"),
    ("order number 1234567890, phone +44 20 7946 0958",
     "order number 1234567890, phone <PHONE_NUMBER>"),
])
async def test_order_numbers_are_stored_as_written(manager: DialogueManager,
                                                   store: ConversationStore, text: str,
                                                   expected: str) -> None:
    await collect(manager, UserMessage(text, "c-order", "test", "u"))
    assert (await stored_texts(store, "c-order"))[0] == expected


def test_identifiers_the_company_keeps_are_never_redacted(sample_index: FaqIndex) -> None:
    settings = Settings()
    text = "gift card GC-4111111111111111 and card 4111111111111111"
    settings.safety.pii_keep_patterns = [r"GC-\d{16}"]
    layer = safety_layer(settings, sample_index)
    assert layer is not None
    assert layer.redact(text) == "gift card GC-4111111111111111 and card <CREDIT_CARD>"


def test_a_keep_pattern_that_is_no_regex_is_a_clear_settings_error(tmp_path: Path) -> None:
    from bot.errors import SettingsError
    from bot.settings import load_settings

    path = tmp_path / "supportbot.yaml"
    path.write_text('safety:\n  pii_keep_patterns: ["KO-\\\\d{6}", "(KO"]\n', encoding="utf-8")
    with pytest.raises(SettingsError, match=r"safety\.pii_keep_patterns: '\(KO' is not a "
                       "regular expression"):
        load_settings(path)


# --- item 5: database file permissions ------------------------------------------------------

async def test_a_new_database_is_private(tmp_path: Path) -> None:
    folder = tmp_path / "fresh" / ".supportbot"
    store = ConversationStore(f"sqlite+aiosqlite:///{folder}/supportbot.db")
    try:
        await store.init()
        await store.record_turn(UserMessage("hi", "c-perm", "test", "u"),
                                BotReply("hello", Decision.ANSWER, "c-perm"))
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()}
    finally:
        await store.close()
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE(folder.parent.stat().st_mode) == 0o700
    assert "supportbot.db-wal" in modes
    assert modes == dict.fromkeys(modes, 0o600), modes


# --- item 18: no redaction on the event loop ------------------------------------------------

def _recording(threads: list[int], real: Callable[..., Any]) -> Callable[..., Any]:
    def record(*args: Any, **kwargs: Any) -> Any:
        threads.append(threading.get_ident())
        return real(*args, **kwargs)
    return record


async def test_redaction_runs_off_the_event_loop(manager: DialogueManager,
                                                 safety: SafetyLayer,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    threads: list[int] = []
    for name in ("redact", "find"):
        monkeypatch.setattr(safety.redactor, name,
                            _recording(threads, getattr(safety.redactor, name)))
    loop_thread = threading.get_ident()
    _, reply = await collect(manager, UserMessage(TEXT, "c-loop", "test", "u",
                                                  client_id="jane.doe@example.com"))
    assert reply.message_id is not None
    assert await manager.feedback("c-loop", reply.message_id, "up", "mail me at a@b.com")
    assert threads and loop_thread not in threads


async def test_faq_additions_walk_the_faq_off_the_event_loop(store: ConversationStore,
                                                            sample_index: FaqIndex,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    from bot.operators.faq import FaqLearning
    from bot.operators.store import NotFoundError

    threads: list[int] = []
    learning = FaqLearning(store, sample_index)
    monkeypatch.setattr(learning, "_owners", _recording(threads, learning._owners))
    with pytest.raises(NotFoundError):
        await learning.add("anna", "where is my parcel", entry_id="no-such-entry")
    assert threads and threading.get_ident() not in threads


async def test_the_safety_layer_is_built_off_the_event_loop(tmp_path: Path,
                                                           sample_index: FaqIndex,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    import bot.runtime

    threads: list[int] = []
    monkeypatch.setattr(bot.runtime, "safety_layer",
                        _recording(threads, bot.runtime.safety_layer))
    runtime = await bot.runtime.open_runtime(web_settings(tmp_path), sample_index)
    await runtime.close()
    assert threads and threading.get_ident() not in threads


def test_the_index_built_first_makes_the_shared_folder_private(
        tmp_path: Path, sample_entries: list[Any], minilm: Any) -> None:
    """`supportbot serve` builds the index before it opens the database: the .supportbot
    folder they share (with the web secret) is created owner-only by whichever comes first."""
    from retrieval.index import FaqIndex

    folder = tmp_path / "fresh" / ".supportbot"
    FaqIndex.build(sample_entries[:3], minilm).save(folder / "index")
    for made in (folder.parent, folder, folder / "index"):
        assert stat.S_IMODE(made.stat().st_mode) == 0o700, made
