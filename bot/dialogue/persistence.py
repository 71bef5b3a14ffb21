"""A turn as stored: PII redacted, storage failures noted in the reply; stored replies read
back."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import replace
from typing import cast

from bot.dialogue.turn import Turn, Verdicts
from bot.errors import StorageError
from bot.safety.layer import SafetyLayer
from bot.safety.normalize import clean
from bot.settings import DialogueSettings
from bot.storage import ConversationStore, Message
from bot.storage.models import CLIENT_ID_LENGTH
from bot.types import BotReply, ConversationStatus, Decision, ReplyMeta, Source, UserMessage
from retrieval.corpus import FaqEntry

log = logging.getLogger(__name__)


async def store_turn(store: ConversationStore, safety: SafetyLayer | None,
                     dialogue: DialogueSettings, message: UserMessage, reply: BotReply,
                     turn: Turn) -> BotReply:
    """Store the turn, PII redacted; a storage failure is logged and noted, and the customer
    still has it. The reply returned keeps its text (what was shown), with redacted meta."""
    limit = dialogue.max_input_chars
    stored = message if len(message.text) <= limit else replace(message,
                                                                text=message.text[:limit])
    kept = reply
    verdicts: Verdicts = (turn.verdicts_in, turn.verdicts_out or None)
    original: str | None = None  # the customer's text as written, if redaction changed it
    if safety is not None and safety.settings.redact_stored:
        # presidio, spaCy and the patterns take a while: off the event loop, like embedding
        stored, kept, verdicts, original = await asyncio.to_thread(
            redacted, safety, stored, reply, verdicts)
    status = ConversationStatus.HANDOFF if reply.decision is Decision.HANDOFF else None
    if reply.decision is Decision.HELD:  # only the customer's message, for the operator
        try:
            await store.record_held(stored, dict(kept.meta), verdicts[0], original)
        except StorageError as exc:
            log.error("held message not stored in conversation %s: %s",
                      message.conversation_id, exc)
            return replace(reply, meta={**reply.meta, "storage_error": str(exc)})
        return reply
    try:
        message_id = await store.record_turn(stored, kept, status=status,
                                             verdicts=verdicts, original=original)
    except StorageError as exc:
        log.error("turn not stored in conversation %s: %s", message.conversation_id, exc)
        return replace(reply, meta={**kept.meta, "storage_error": str(exc)},
                       candidates=kept.candidates)
    return replace(reply, meta=kept.meta, candidates=kept.candidates, message_id=message_id)


def redacted(safety: SafetyLayer, message: UserMessage, reply: BotReply,
             verdicts: Verdicts) -> tuple[UserMessage, BotReply, Verdicts, str | None]:
    """The turn as stored: every free text the customer or the bot wrote redacted by the
    one redactor (the FAQ's own contacts kept in the bot's text), the client id and the
    guards' reasons (which may quote the message) too; and the customer's text as written
    (cleaned), when redaction changed it."""
    client_id = (safety.redact_id(message.client_id, CLIENT_ID_LENGTH)
                 if message.client_id is not None else None)
    written = clean(message.text)[0]
    stored = replace(message, text=safety.redact(written), client_id=client_id)
    kept = replace(reply, text=safety.redact(reply.text, keep_faq=True),
                   meta=cast(ReplyMeta, safety.redact_data(reply.meta)),
                   candidates=[replace(c, text=safety.redact(c.text, True))
                               for c in reply.candidates])
    return (stored, kept, (safety.redact_data(verdicts[0]), safety.redact_data(verdicts[1])),
            written if stored.text != written else None)


async def stored_id(safety: SafetyLayer | None, client_id: str) -> str:
    """A client message id as `redacted` stores it."""
    if safety is None or not safety.settings.redact_stored:
        return client_id
    return await asyncio.to_thread(safety.redact_id, client_id, CLIENT_ID_LENGTH)


def stored_reply(by_id: Mapping[str, FaqEntry], message: Message) -> BotReply:
    """A stored bot message as a reply again (sources looked up in today's FAQ)."""
    decision = Decision(message.decision or Decision.ERROR.value)
    used = [Source(i, by_id[i].question if i in by_id else i, score,
                   by_id[i].link if i in by_id else None)
            for i, score in zip(message.faq_ids, message.scores, strict=False)]
    clarify = decision is Decision.CLARIFY
    return BotReply(message.text, decision, message.conversation_id,
                    sources=[] if clarify else used, suggestions=used if clarify else [],
                    confidence=message.confidence or 0.0,
                    latency_ms=message.latency_ms or 0.0,
                    meta=cast(ReplyMeta, dict(message.meta or {})), message_id=message.id)
