"""Shared by the dialogue tests: the near-miss question and a faithful answer to it, thresholds
that put the near miss in the generated band, managers built on them, and collecting a turn."""

from __future__ import annotations

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


def manager(index: FaqIndex, store: ConversationStore, **retrieval: object) -> DialogueManager:
    """A manager with default settings but for the `retrieval` ones given."""
    settings = Settings()
    for key, value in retrieval.items():
        setattr(settings.retrieval, key, value)
    return DialogueManager(index, store, settings.persona, settings.retrieval, settings.dialogue)


def generating(index: FaqIndex, store: ConversationStore, generator: object,
               min_grounding: float = 0.6, loads: list[int] | None = None,
               **dialogue: object) -> DialogueManager:
    """A manager whose thresholds put NEAR_MISS in the generated band."""
    settings = into_generated_band(Settings(), index, min_grounding)
    for key, value in dialogue.items():
        setattr(settings.dialogue, key, value)
    settings.model.generation.max_new_tokens = 60

    def factory() -> object:
        if loads is not None:
            loads.append(1)
        return generator

    return DialogueManager(index, store, settings.persona, settings.retrieval, settings.dialogue,
                           settings.model.generation, factory)  # type: ignore[arg-type]
