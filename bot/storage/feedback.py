"""Customers' ratings of the bot's replies, and transcripts with them."""

from __future__ import annotations

from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from bot.errors import InputError
from bot.storage.engine import Database
from bot.storage.models import COMMENT_LENGTH, Feedback, Message, utcnow
from bot.storage.values import checked_id, clean

RATINGS = ("up", "down")


class FeedbackStore(Database):
    """Ratings ("up" or "down", with a comment) of bot messages."""

    async def record_feedback(self, conversation_id: str, message_id: int, rating: str,
                              comment: str | None = None) -> bool:
        """Store a rating ("up" or "down") of a bot message of this conversation; the latest
        rating of a message replaces the earlier one. False when there is no such bot message.
        """
        conversation_id = checked_id(conversation_id)
        if rating not in RATINGS:
            raise InputError(f"rating must be one of {', '.join(RATINGS)}, not {rating!r}")
        if comment is not None and len(comment) > COMMENT_LENGTH:
            raise InputError(f"feedback comment longer than {COMMENT_LENGTH} characters")
        now = utcnow()
        values = {"message_id": message_id, "conversation_id": conversation_id,
                  "rating": rating, "comment": clean(comment), "created_at": now,
                  "updated_at": now}
        try:
            async with self._engine.begin() as conn:
                found = await conn.scalar(select(Message.id).where(
                    Message.id == message_id, Message.conversation_id == conversation_id,
                    Message.role == "bot"))
                if found is None:
                    return False
                changed = await conn.execute(
                    update(Feedback).where(Feedback.message_id == message_id)
                    .values(rating=rating, comment=values["comment"], updated_at=now))
                if not changed.rowcount:
                    await conn.execute(insert(Feedback).values(values))
        except IntegrityError:  # a rating of the same message raced this one: store this one
            return await self.record_feedback(conversation_id, message_id, rating, comment)
        except SQLAlchemyError as exc:
            raise self.error("store feedback", exc) from exc
        return True

    async def transcript(self, conversation_id: str,
                         limit: int = 1000) -> list[tuple[Message, str | None]]:
        """The last `limit` messages of a conversation, oldest first, each with its rating."""
        conversation_id = checked_id(conversation_id)
        statement = (select(Message, Feedback.rating)
                     .outerjoin(Feedback, Feedback.message_id == Message.id)
                     .where(Message.conversation_id == conversation_id)
                     .order_by(Message.id.desc()).limit(limit))
        try:
            async with self._session() as session:
                rows = (await session.execute(statement)).all()
        except SQLAlchemyError as exc:
            raise self._read_error(exc) from exc
        return [(message, rating) for message, rating in reversed(rows)]

    async def rated_conversations(self, rating: str = "up") -> list[str]:
        """Ids of the conversations with at least one bot message rated `rating`, oldest first."""
        statement = (select(Feedback.conversation_id).where(Feedback.rating == rating)
                     .group_by(Feedback.conversation_id)
                     .order_by(func.min(Feedback.message_id)))
        try:
            async with self._session() as session:
                return list((await session.scalars(statement)).all())
        except SQLAlchemyError as exc:
            raise self._read_error(exc) from exc
