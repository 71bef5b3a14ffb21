"""bot/learning/store.py's `SignalStore` on a real database: the shares of a conversation, of
a customer per hour (an injected clock) and of the whole bot, a changed rating replacing the
earlier one, and erasure (a forgotten conversation's signals go with it)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bot.learning.store import MAX_WORDING_CHARS, SignalStore
from bot.settings import LearningSettings
from bot.storage import ConversationStore
from bot.types import BotReply, Decision, UserMessage

pytestmark = pytest.mark.every_database
WORDING = "I ordered the wrong colour, can I fix it"


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = datetime(2026, 3, 1, 12, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def signal_store(store: ConversationStore, clock: Clock, **limits: object) -> SignalStore:
    return SignalStore(store, LearningSettings.model_validate(limits), clock)


async def pick(signals: SignalStore, conversation: str, source: str, message_id: int) -> int:
    return await signals.record("pick", ["change-order"], WORDING, conversation, source, "web",
                                message_id)


async def test_a_conversation_gives_its_share_and_no_more(store: ConversationStore) -> None:
    signals = signal_store(store, Clock(), per_conversation=2)
    assert [await pick(signals, "c1", f"web:{n}", n + 1) for n in range(3)] == [1, 1, 0]
    assert await pick(signals, "c2", "web:9", 9) == 1  # another conversation has its own
    # 'none of these' is one act however many entries it names
    assert await signals.record("none", ["a", "b", "c"], WORDING, "c3", "web:7", "web", 20) == 3
    assert await pick(signals, "c3", "web:7", 21) == 1
    assert len(await signals.signals()) == 2 + 1 + 3 + 1


async def test_a_customer_gives_its_share_per_hour(store: ConversationStore) -> None:
    clock = Clock()
    signals = signal_store(store, clock, per_source_per_hour=2)
    assert [await pick(signals, f"c{n}", "web:same", n + 1) for n in range(3)] == [1, 1, 0]
    assert await pick(signals, "c9", "web:other", 9) == 1
    clock.now += timedelta(minutes=59)
    assert await pick(signals, "c10", "web:same", 10) == 0
    clock.now += timedelta(minutes=2)  # the first two are over an hour old
    assert await pick(signals, "c11", "web:same", 11) == 1
    assert [s.conversation_id for s in await signals.signals() if s.source == "web:same"] == \
        ["c0", "c1", "c11"]


async def test_the_whole_bot_records_its_hourly_limit(store: ConversationStore) -> None:
    clock = Clock()
    signals = signal_store(store, clock, signals_per_hour=3)
    assert [await pick(signals, f"c{n}", f"web:{n}", n + 1) for n in range(5)] == \
        [1, 1, 1, 0, 0]
    # an operator's answer is not a customer's act: never limited
    assert await signals.record("operator", ["change-order"], WORDING, "c9", "operator:ann",
                                "operator", 99) == 1
    clock.now += timedelta(hours=1, seconds=1)
    assert await pick(signals, "c5", "web:5", 6) == 1


async def test_a_changed_rating_replaces_the_earlier_one(store: ConversationStore) -> None:
    signals = signal_store(store, Clock(), per_source_per_hour=1)

    async def rate(kind: str) -> int:
        return await signals.record(kind, ["missing-items"], WORDING, "c1", "web:a", "web", 5)

    assert await rate("up") == 1
    assert await rate("down") == 1  # the customer's share is spent, but this is a change
    assert await rate("up") == 1
    assert [(s.kind, s.entry_id) for s in await signals.signals()] == [("up", "missing-items")]
    assert await signals.record("down", ["missing-items"], WORDING, "c1", "web:a", "web",
                                6) == 0  # another message: over the share


async def test_what_cannot_be_learnt_is_not_stored(store: ConversationStore) -> None:
    signals = signal_store(store, Clock())
    with pytest.raises(ValueError, match="kind must be one of"):
        await signals.record("love", ["a"], WORDING, "c1", "web:a", "web", 1)
    assert await signals.record("pick", ["a"], "x" * (MAX_WORDING_CHARS + 1), "c1", "web:a",
                                "web", 1) == 0
    assert await signals.record("pick", [""], WORDING, "c1", "web:a", "web", 1) == 0
    assert await signals.record("pick", ["a"], "", "c1", "web:a", "web", 1) == 0
    assert await signals.signals() == []


async def test_old_signals_no_longer_count(store: ConversationStore) -> None:
    clock = Clock()
    signals = signal_store(store, clock, keep_days=1)
    await pick(signals, "c1", "web:a", 1)
    clock.now += timedelta(days=1, seconds=1)
    await pick(signals, "c2", "web:b", 2)
    assert [s.conversation_id for s in await signals.signals()] == ["c2"]


async def test_forgetting_a_conversation_deletes_its_signals(store: ConversationStore) -> None:
    signals = signal_store(store, Clock())
    for conversation in ("forget-me", "keep-me"):
        await store.record_turn(
            UserMessage(WORDING, conversation, channel="web", user_id="web"),
            BotReply("Did you mean...", Decision.CLARIFY, conversation))
        await pick(signals, conversation, f"web:{conversation}", 1 if conversation == "keep-me"
                   else 2)
    counts = await store.forget(["forget-me"])
    assert counts["learning_signals"] == 1 and counts["messages"] == 2
    assert [s.conversation_id for s in await signals.signals()] == ["keep-me"]
    assert await signals.forget_conversation("keep-me") == 1
    assert await signals.signals() == []
