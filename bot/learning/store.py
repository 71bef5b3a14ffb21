"""Learning signals and operators' reviews in the database (tables learning_signals and
learning_reviews, migration 0009), with the limits on how much one customer may teach."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from sqlalchemy import delete, func, insert, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.learning.trust import KINDS, Signal, wording_key
from bot.settings import LearningSettings
from bot.storage import ConversationStore
from bot.storage.models import (
    CHANNEL_LENGTH,
    FAQ_ID_LENGTH,
    SOURCE_LENGTH,
    LearningReview,
    LearningSignal,
    as_utc,
    utcnow,
)

MAX_WORDING_CHARS = 500  # longer messages are not learnt (an FAQ phrasing is a question)


class SignalStore:
    """Records signals within the limits of `settings`, reads them and the reviews back."""

    def __init__(self, store: ConversationStore, settings: LearningSettings,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock

    async def record(self, kind: str, entry_ids: Sequence[str], wording: str,
                     conversation_id: str, source: str, channel: str,
                     message_id: int | None = None) -> int:
        """Store one signal per entry; returns how many were stored: 0 when the conversation,
        the source or the whole bot has given its share (a later signal is dropped, the
        earlier ones stay)."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
        entry_ids = [e for e in dict.fromkeys(entry_ids) if e and len(e) <= FAQ_ID_LENGTH]
        if not entry_ids or not wording or len(wording) > MAX_WORDING_CHARS:
            return 0
        now = self.clock()
        hour_ago = now - timedelta(hours=1)
        try:
            async with self.store.engine.begin() as conn:
                if message_id is not None and kind in ("up", "down"):
                    # a rating changed: the latest one counts, in the place of the earlier
                    replaced = await conn.execute(delete(LearningSignal).where(
                        LearningSignal.message_id == message_id,
                        LearningSignal.kind.in_(("up", "down"))))
                    again = bool(replaced.rowcount)
                else:
                    again = False
                if kind != "operator" and not again and not await self._within_limits(
                        conn, conversation_id, source, hour_ago):
                    return 0
                await conn.execute(insert(LearningSignal), [
                    {"kind": kind, "entry_id": entry_id, "wording": wording,
                     "conversation_id": conversation_id, "message_id": message_id,
                     "source": source[:SOURCE_LENGTH], "channel": channel[:CHANNEL_LENGTH],
                     "created_at": now} for entry_id in entry_ids])
        except SQLAlchemyError as exc:
            raise self.store.error("store a learning signal", exc) from exc
        return len(entry_ids)

    async def _within_limits(self, conn: AsyncConnection, conversation_id: str, source: str,
                             since: datetime) -> bool:
        """Whether one more act (a pick, a rating, 'none of these': one per bot message) of
        this conversation and source fits their shares and the bot's hourly limit."""
        acts = func.count(func.distinct(LearningSignal.message_id))
        customer = LearningSignal.kind != "operator"
        limits = self.settings
        given = await conn.scalar(select(acts).where(
            LearningSignal.conversation_id == conversation_id, customer))
        if int(given or 0) >= limits.per_conversation:
            return False
        by_source = await conn.scalar(select(acts).where(
            LearningSignal.source == source, LearningSignal.created_at >= since, customer))
        if int(by_source or 0) >= limits.per_source_per_hour:
            return False
        everyone = await conn.scalar(select(acts).where(LearningSignal.created_at >= since,
                                                        customer))
        return int(everyone or 0) < limits.signals_per_hour

    async def signals(self, after: int = 0) -> list[Signal]:
        """The signals that still count (within keep_days), oldest first, ids above `after`."""
        since = self.clock() - timedelta(days=self.settings.keep_days)
        try:
            async with self.store.engine.connect() as conn:
                rows = (await conn.execute(
                    select(LearningSignal).where(LearningSignal.id > after,
                                                 LearningSignal.created_at >= since)
                    .order_by(LearningSignal.id))).all()
        except SQLAlchemyError as exc:
            raise self.store.error("read the learning signals", exc) from exc
        return [Signal(r.id, r.kind, r.entry_id, r.wording, r.conversation_id, r.source,
                       as_utc(r.created_at), r.channel) for r in rows]

    async def reviews(self) -> dict[tuple[str, str], tuple[str, str]]:
        """The latest review of each (wording key, entry): (decision, operator)."""
        try:
            async with self.store.engine.connect() as conn:
                rows = (await conn.execute(select(LearningReview)
                                           .order_by(LearningReview.id))).all()
        except SQLAlchemyError as exc:
            raise self.store.error("read the learning reviews", exc) from exc
        return {(wording_key(r.wording), r.entry_id): (r.decision, r.operator) for r in rows}

    async def review(self, wording: str, entry_id: str, decision: str, operator: str) -> None:
        """Store an operator's decision ('approved' or 'removed') on a (wording, entry)."""
        try:
            async with self.store.engine.begin() as conn:
                await conn.execute(insert(LearningReview).values(
                    entry_id=entry_id, wording=wording, decision=decision, operator=operator,
                    created_at=self.clock()))
        except SQLAlchemyError as exc:
            raise self.store.error("store the review", exc) from exc

    async def forget_conversation(self, conversation_id: str) -> int:
        """Delete a conversation's signals (its erasure)."""
        try:
            async with self.store.engine.begin() as conn:
                result = await conn.execute(delete(LearningSignal).where(
                    LearningSignal.conversation_id == conversation_id))
        except SQLAlchemyError as exc:
            raise self.store.error("delete the learning signals", exc) from exc
        return int(result.rowcount or 0)
