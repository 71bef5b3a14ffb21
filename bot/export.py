"""`supportbot export`: stored conversations -> training data (messages JSONL) for `train`.

What goes in: conversations in which a customer rated at least one bot answer up, an operator
replied, or an operator corrected a bot answer. Answers rated up, operators' replies and
operators' corrections (in place of the wrong answer) are the turns to learn (`weight: 1`);
other bot answers stay as context (`weight: 0`, the OpenAI fine-tuning convention); an answer
rated down and not corrected is dropped with the customer message it answered, and so are
refusals, errors and wait notices, which are the bot's fixed texts rather than answers. Text is
redacted again on the way out.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.storage import ConversationStore
from bot.storage.models import Message
from bot.types import Decision

# Bot texts that are fixed replies, not answers: never training targets, never context.
_NOT_ANSWERS = {Decision.BLOCKED.value, Decision.ERROR.value, Decision.INVALID.value,
                Decision.WAITING.value, Decision.NOTICE.value}


@dataclass
class ExportStats:
    """What the export wrote and left out."""

    conversations: int = 0
    trained_turns: int = 0
    context_turns: int = 0
    dropped_down_rated: int = 0
    dropped_fixed_replies: int = 0
    corrections: int = 0  # bot answers an operator corrected, exported corrected
    skipped_conversations: int = 0  # nothing left to learn after the drops

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def conversation_record(conversation_id: str, rows: list[tuple[Message, str | None]],
                        redact: Callable[[str], str], stats: ExportStats
                        ) -> dict[str, Any] | None:
    """One JSONL record, or None when no answer worth learning is left."""
    messages: list[dict[str, Any]] = []
    pending: list[dict[str, Any]] = []  # customer messages not answered yet
    for message, rating in rows:
        if message.role == "user":
            pending.append({"role": "user", "content": redact(message.text)})
            continue
        correction = (message.meta or {}).get("correction") if message.role == "bot" else None
        if correction:  # an operator's right answer in place of the bot's wrong one
            messages += pending
            pending = []
            messages.append({"role": "assistant", "content": redact(str(correction["text"])),
                             "weight": 1})
            stats.trained_turns += 1
            stats.corrections += 1
            continue
        if rating == "down" or message.decision in _NOT_ANSWERS:
            if rating == "down":
                stats.dropped_down_rated += 1
            else:
                stats.dropped_fixed_replies += 1
            pending = []  # the question goes with the answer it got
            continue
        learn = rating == "up" or message.role == "operator"
        messages += pending
        pending = []
        messages.append({"role": "assistant", "content": redact(message.text),
                         "weight": int(learn)})
        stats.trained_turns += learn
        stats.context_turns += not learn
    if not any(m.get("weight") for m in messages):
        stats.skipped_conversations += 1
        return None
    stats.conversations += 1
    return {"id": conversation_id, "messages": messages}


async def export(store: ConversationStore, out: Path, redact: Callable[[str], str]
                 ) -> ExportStats:
    """Write every conversation worth learning from to `out` (JSONL), atomically."""
    stats = ExportStats()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.with_name(out.name + ".part")
    with staging.open("w", encoding="utf-8") as file:
        from bot.operators.store import OperatorStore

        taught = await OperatorStore(store).taught_conversations()
        rated = await store.rated_conversations("up")
        for conversation_id in dict.fromkeys(rated + taught):
            rows = await store.transcript(conversation_id, limit=100_000)
            record = conversation_record(conversation_id, rows, redact, stats)
            if record is not None:
                file.write(json.dumps(record, ensure_ascii=False) + "\n")
    staging.replace(out)
    return stats
