"""Shared by the dialogue tests: the near-miss question and a faithful answer to it, a SQLite
store, thresholds that put the near miss in the generated band, and collecting a turn."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.dialogue import DialogueManager
from bot.settings import Settings
from bot.storage import ConversationStore
from bot.types import BotReply, TextEvent, UserMessage
from retrieval.index import FaqIndex

# Between "Did you mean" and an outright answer on the sample FAQ (return-policy territory).
NEAR_MISS = "what's the time limit for sending stuff back"
# An answer to NEAR_MISS that the grounding check passes against the how-to-return entry.
FAITHFUL = ('Go to "My orders", choose the order and click "Return items", then select the items '
            "and a reason.")


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[ConversationStore]:
    """A fresh SQLite conversation store in the test's folder."""
    store = ConversationStore(f"sqlite+aiosqlite:///{tmp_path}/bot.db")
    await store.init()
    yield store
    await store.close()


def into_generated_band(settings: Settings, index: FaqIndex,
                        min_grounding: float = 0.6) -> Settings:
    """Set thresholds around NEAR_MISS's score so that it is generated, not answered or
    clarified; returns the same settings."""
    score = index.search(NEAR_MISS, top_k=1)[0].score
    settings.retrieval.answer_threshold = score + 0.05
    settings.retrieval.suggest_threshold = score - 0.15
    settings.dialogue.min_grounding = min_grounding
    settings.dialogue.middle = "generate"
    return settings


async def collect(dm: DialogueManager, message: UserMessage) -> tuple[list[str], BotReply]:
    """The text events of a turn and its final reply."""
    pieces: list[str] = []
    reply = None
    async for event in dm.stream(message):
        if isinstance(event, TextEvent):
            pieces.append(event.text)
        else:
            reply = event
    assert isinstance(reply, BotReply)
    return pieces, reply
