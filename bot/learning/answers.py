"""Operators' answers teach: when an operator replies in a handed-off conversation with the
text of an FAQ entry's answer, the customer's question the bot could not answer becomes a
trusted signal for that entry (UseLearning.operator_answered), with no extra click.

The reply is matched to an entry by the same words (case and spaces aside), else by cosine
similarity to the entry's answer with the index's embedder, computed off the event loop. The
question is the customer's last message before the handoff that the bot did not answer: its
reply was a fallback, a "Did you mean" or the handoff itself; a short request for a human
("human please") is not a question and is skipped.
"""

from __future__ import annotations

import asyncio
import logging
import unicodedata
from collections.abc import Sequence

import numpy as np

from bot.errors import StorageError
from bot.intents import Intents
from bot.learning.learner import UseLearning
from bot.storage import Message
from bot.types import Decision

log = logging.getLogger(__name__)
SAME_ANSWER = 0.95  # cosine at which an operator's reply is an entry's answer reworded
UNANSWERED = frozenset({Decision.FALLBACK.value, Decision.CLARIFY.value,
                        Decision.HANDOFF.value})
HISTORY = 60  # messages looked back for the customer's question


def answer_key(text: str) -> str:
    """How a reply and an answer are compared for 'the same text': case, width, spaces."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def unanswered_question(messages: Sequence[Message], intents: Intents) -> Message | None:
    """The customer's last message (of `messages`, oldest first) whose next bot reply did not
    answer it, requests for a human aside; None when there is none."""
    found = None
    for i, message in enumerate(messages):
        if message.role != "user" or intents.wants_human(message.text):
            continue
        reply = next((m for m in messages[i + 1:] if m.role != "user"), None)
        if reply is not None and reply.role == "bot" and reply.decision in UNANSWERED:
            found = message
    return found


class OperatorAnswers:
    """Recognises an FAQ answer in an operator's reply and teaches the question behind it."""

    def __init__(self, learning: UseLearning, intents: Intents) -> None:
        self.learning = learning
        self.intents = intents
        self._answers: dict[tuple[str, str], np.ndarray] = {}  # (entry, answer): unit vector

    async def taught(self, conversation_id: str, operator: str, text: str,
                     message_id: int | None = None) -> tuple[str, str] | None:
        """Teach from the operator's reply `text` if it is an entry's answer; the (entry id,
        customer's wording) taught, or None. Never raises for a storage or model failure: the
        reply is sent either way, and the failure is logged."""
        if not self.learning.settings.enabled or not text.strip():
            return None
        try:
            entry_id = await asyncio.to_thread(self.entry_of, text)
            if entry_id is None:
                return None
            history = await self.learning.store.history(conversation_id, HISTORY)
            question = unanswered_question([m for m in history if m.id != message_id],
                                           self.intents)
            if question is None:
                return None
            stored = await self.learning.operator_answered(
                conversation_id, operator, entry_id, question.text, message_id)
        except (StorageError, RuntimeError, ValueError) as exc:
            log.warning("learning: operator reply in %s not learnt from: %s",
                        conversation_id, exc)
            return None
        return (entry_id, question.text) if stored else None

    def entry_of(self, text: str) -> str | None:
        """The entry whose answer `text` is: the same words, else the nearest answer at
        cosine >= SAME_ANSWER (embeds; run it off the event loop)."""
        entries = self.learning.index.live_entries()
        key = answer_key(text)
        for entry in entries:
            if answer_key(entry.answer) == key:
                return entry.id
        embedder = self.learning.index.embedder
        missing = [(e.id, e.answer) for e in entries if (e.id, e.answer) not in self._answers]
        if missing:
            vectors = embedder.embed([answer for _, answer in missing])
            self._answers.update(zip(missing, np.asarray(vectors, np.float32), strict=True))
        if not entries:
            return None
        matrix = np.stack([self._answers[(e.id, e.answer)] for e in entries])
        vector = np.asarray(embedder.embed([text]), np.float32).reshape(-1)
        scores = matrix @ vector
        best = int(np.argmax(scores))
        return entries[best].id if float(scores[best]) >= SAME_ANSWER - 1e-6 else None
