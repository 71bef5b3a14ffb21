"""What is kept of a customer and for how long: texts as written (until they expire), erasure."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.storage.engine import Database
from bot.storage.models import (
    Conversation,
    FaqAddition,
    Feedback,
    LearningSignal,
    Message,
    OperatorAction,
    Original,
    utcnow,
)
from bot.storage.values import checked_id, clean


class Privacy(Database):
    """Customers' texts before redaction, kept for `original_ttl`; forgetting conversations."""

    # How long a customer's text as written is kept for the operator holding the
    # conversation (storage.original_text_hours); None: never stored.
    original_ttl: timedelta | None = None

    async def _keep_original(self, conn: AsyncConnection, message_id: int | None,
                             conversation_id: str, original: str | None,
                             now: datetime) -> None:
        """Keep a customer's text as written next to its redacted message, until it expires."""
        if original is None or message_id is None or self.original_ttl is None:
            return
        await conn.execute(insert(Original).values(
            message_id=message_id, conversation_id=conversation_id, text=clean(original),
            expires_at=now + self.original_ttl))

    async def originals(self, conversation_id: str,
                        now: datetime | None = None) -> dict[int, str]:
        """The customer's texts as written in a conversation, by message id, not yet expired."""
        conversation_id = checked_id(conversation_id)
        try:
            async with self._engine.connect() as conn:
                rows = (await conn.execute(select(Original.message_id, Original.text).where(
                    Original.conversation_id == conversation_id,
                    Original.expires_at > (now or utcnow())))).all()
        except SQLAlchemyError as exc:
            raise self._read_error(exc) from exc
        return {int(message_id): str(text) for message_id, text in rows}

    async def purge_originals(self, now: datetime | None = None) -> int:
        """Delete the texts as written whose time is up; how many."""
        try:
            async with self._engine.begin() as conn:
                done = await conn.execute(delete(Original)
                                          .where(Original.expires_at <= (now or utcnow())))
        except SQLAlchemyError as exc:
            raise self.error("purge texts as written", exc) from exc
        return int(done.rowcount or 0)

    async def forget(self, conversation_ids: list[str]) -> dict[str, int]:
        """Delete conversations and everything stored of them (a customer's erasure request):
        texts as written, ratings, messages, operators' actions on them, the learning signals
        they gave (their wordings are the customer's words); FAQ phrasings
        operators learnt from them stay (they are the company's FAQ now, and were stored
        redacted) but lose the link. How many rows of each kind went."""
        ids = [checked_id(i) for i in conversation_ids]
        counts: dict[str, int] = {}
        try:
            async with self._engine.begin() as conn:
                for name, table, column in (
                        ("originals", Original, Original.conversation_id),
                        ("feedback", Feedback, Feedback.conversation_id),
                        ("learning_signals", LearningSignal, LearningSignal.conversation_id),
                        ("messages", Message, Message.conversation_id),
                        ("operator_actions", OperatorAction, OperatorAction.conversation_id),
                        ("conversations", Conversation, Conversation.id)):
                    done = await conn.execute(delete(table).where(column.in_(ids)))
                    counts[name] = int(done.rowcount or 0)
                await conn.execute(update(FaqAddition).where(FaqAddition.conversation_id
                                                             .in_(ids))
                                   .values(conversation_id=None, message_id=None))
        except SQLAlchemyError as exc:
            raise self.error("delete conversations", exc) from exc
        return counts
