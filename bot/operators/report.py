"""The handoff report (`supportbot report`): how often customers reach a human, how long they
wait for the first operator reply, and the questions that most often end with a human, grouped
by meaning, as candidates for new FAQ entries or phrasings."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select

from bot.storage import ConversationStore
from bot.storage.models import Message, as_utc
from retrieval.index import FaqIndex

# Replies after which the customer's message was a real question (not "yes" to "a human?").
_QUESTION_REPLIES = {"answer", "generate", "clarify", "fallback", "handoff"}


@dataclass
class Handoff:
    """One conversation's first handoff: the question that led there, and the wait."""

    conversation_id: str
    at: datetime
    question: str | None  # None: the customer asked for a human straight away
    first_reply_seconds: float | None  # None: no operator reply yet


@dataclass
class Report:
    conversations: int
    handoffs: list[Handoff]
    clusters: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        waits = sorted(h.first_reply_seconds for h in self.handoffs
                       if h.first_reply_seconds is not None)
        return {
            "conversations": self.conversations, "handoffs": len(self.handoffs),
            "handoff_rate": len(self.handoffs) / self.conversations if self.conversations
            else 0.0,
            "answered_by_operator": len(waits),
            "first_reply_seconds": {"median": _quantile(waits, 0.5),
                                    "p90": _quantile(waits, 0.9)},
            "asked_for_human_directly": sum(h.question is None for h in self.handoffs),
            "clusters": self.clusters}


def _quantile(values: Sequence[float], q: float) -> float | None:
    return values[min(len(values) - 1, int(q * len(values)))] if values else None


async def collect(store: ConversationStore, since: datetime | None = None,
                  handoff_keywords: Sequence[str] = ()) -> Report:
    """Every conversation's first handoff (after `since`, if given); a message asking for a
    human (dialogue.handoff_keywords, as the bot reads them) is not the question behind it."""
    from bot.intents import Intents

    intents = Intents(handoff_keywords)
    statement = select(Message.conversation_id, Message.role, Message.text, Message.decision,
                       Message.created_at).order_by(Message.conversation_id, Message.id)
    if since is not None:
        statement = statement.where(Message.created_at >= since)
    async with store.engine.connect() as conn:
        rows = (await conn.execute(statement)).all()
    by_conversation: dict[str, list[Any]] = {}
    for row in rows:
        by_conversation.setdefault(row.conversation_id, []).append(row)
    handoffs = [h for messages in by_conversation.values()
                if (h := _first_handoff(messages, intents.wants_human)) is not None]
    return Report(len(by_conversation), handoffs)


def _first_handoff(messages: list[Any], asks_for_human: Callable[[str], bool]
                   ) -> Handoff | None:
    question: str | None = None
    pending: str | None = None  # the customer's last message, until the bot's reply to it
    for i, message in enumerate(messages):
        if message.role == "user":
            pending = message.text
            continue
        if message.role != "bot":
            continue
        if message.decision == "handoff":
            asked = question if pending is None or _is_consent(pending) else pending
            if asked is not None and asks_for_human(asked):
                asked = question
            first = next((m for m in messages[i + 1:] if m.role == "operator"), None)
            wait = ((as_utc(first.created_at) - as_utc(message.created_at)).total_seconds()
                    if first is not None else None)
            return Handoff(message.conversation_id, as_utc(message.created_at), asked, wait)
        if pending is not None and message.decision in _QUESTION_REPLIES:
            question = pending
        pending = None
    return None


def _is_consent(text: str) -> bool:
    """"yes" to "Would you like me to pass you to a human colleague?"."""
    return len(text.split()) <= 3 and any(word in text.lower() for word in (
        "yes", "yeah", "yep", "please", "ok", "sure"))


def cluster_questions(report: Report, index: FaqIndex, distance: float = 0.35,
                      top: int = 10) -> None:
    """Group the handed-off questions by meaning (average-link clustering of their
    embeddings, cosine distance below `distance`), largest first, each with its nearest FAQ
    entry: a question near an entry is a missed phrasing, one far from all a missing entry."""
    questions = [h.question for h in report.handoffs if h.question]
    if not questions:
        return
    vectors = index.embedder.embed(questions)
    if len(questions) == 1:
        labels = [0]
    else:
        from sklearn.cluster import AgglomerativeClustering

        labels = list(AgglomerativeClustering(n_clusters=None, distance_threshold=distance,
                                              metric="cosine", linkage="average")
                      .fit_predict(vectors))
    groups: dict[int, list[int]] = {}
    for position, label in enumerate(labels):
        groups.setdefault(int(label), []).append(position)
    for members in sorted(groups.values(), key=len, reverse=True)[:top]:
        centre = vectors[members].mean(axis=0)
        example = questions[max(members, key=lambda m: float(vectors[m] @ centre))]
        hit = index.search(example, top_k=1)
        report.clusters.append({
            "count": len(members), "example": example,
            "questions": sorted({questions[m] for m in members})[:5],
            "nearest_faq": hit[0].entry.id if hit else None,
            "nearest_score": round(hit[0].score, 3) if hit else None})
