"""ORM models of the conversation schema; the Alembic migrations build exactly these tables."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import JSON, DateTime, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from bot.types import ConversationStatus

ID_LENGTH = 128  # conversation ids, checked before any query so every backend refuses the same
USER_ID_LENGTH = 128
CHANNEL_LENGTH = 32
CLIENT_ID_LENGTH = 64
COMMENT_LENGTH = 1000
OPERATOR_NAME_LENGTH = 64
FAQ_ID_LENGTH = 128
SOURCE_LENGTH = 64  # a learning signal's source: a digest, never an address


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(timezone.utc)


def as_utc(value: datetime) -> datetime:
    """A stored time, timezone-aware: SQLite gives naive times (stored in UTC), PostgreSQL
    aware ones."""
    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)


class Base(DeclarativeBase):
    """Declarative base of the conversation schema."""


class Conversation(Base):
    """One conversation on one channel with one user, and who answers it (bot or human)."""

    __tablename__ = "conversations"

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    channel: Mapped[str] = mapped_column(String(CHANNEL_LENGTH))
    user_id: Mapped[str] = mapped_column(String(USER_ID_LENGTH), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # A ConversationStatus value; "handoff" keeps the bot from answering as usual.
    status: Mapped[str] = mapped_column(String(16), default=ConversationStatus.BOT.value,
                                        server_default=ConversationStatus.BOT.value)
    # When the status last changed (None: it never has, the bot has answered from the start).
    status_changed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True),
                                                               nullable=True)
    # The operator holding a handed-off conversation (None: waiting for one, or the bot's).
    # A name, not a key: removing an account leaves the history readable.
    claimed_by: Mapped[str | None] = mapped_column(String(OPERATOR_NAME_LENGTH), nullable=True)
    claimed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class Message(Base):
    """One message: the user's text, or the bot's reply with what it decided and why."""

    __tablename__ = "messages"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversations.id"), index=True)
    role: Mapped[str] = mapped_column(String(16))  # "user", "bot" or "operator"
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    decision: Mapped[str | None] = mapped_column(String(32), nullable=True)
    faq_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    scores: Mapped[list[float]] = mapped_column(JSON, default=list)
    confidence: Mapped[float | None] = mapped_column(Float, nullable=True)
    latency_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    # How the reply came about: retrieval query, prompt size, candidates and their scores, ...
    meta: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # The channel's own id of a user message, so a re-sent message is not answered twice.
    client_id: Mapped[str | None] = mapped_column(String(CLIENT_ID_LENGTH), nullable=True)
    # The safety guards' verdicts (guard, allowed, score, reason, ...): input guards on the
    # user's message, output guards on the bot's; None where no guard ran.
    verdicts: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, nullable=True)

    __table_args__ = (Index("ix_messages_conversation_client", "conversation_id", "client_id"),)


class Feedback(Base):
    """A customer's rating of one bot message (thumbs up or down); the latest rating counts."""

    __tablename__ = "feedback"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id"), unique=True)
    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversations.id"), index=True)
    rating: Mapped[str] = mapped_column(String(8))  # "up" or "down"
    comment: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Operator(Base):
    """A human who answers handed-off conversations; only an argon2 hash of the password."""

    __tablename__ = "operators"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(OPERATOR_NAME_LENGTH), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # Sessions issued before this are over (set at logout: every device signs in again).
    sessions_after: Mapped[datetime | None] = mapped_column(DateTime(timezone=True),
                                                            nullable=True)


class OperatorAction(Base):
    """What an operator did (login, claim, reply, release, close), kept for accountability.

    The operator is a name, not a key, so the log outlives a removed account.
    """

    __tablename__ = "operator_actions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    operator: Mapped[str] = mapped_column(String(OPERATOR_NAME_LENGTH), index=True)
    action: Mapped[str] = mapped_column(String(16))
    conversation_id: Mapped[str | None] = mapped_column(String(ID_LENGTH), nullable=True,
                                                        index=True)
    message_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # A first claim: how long the customer had waited for a human (the expected wait's data).
    waited_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)


class FaqAddition(Base):
    """An FAQ phrasing or entry an operator taught the bot from the inbox: the bot's index takes
    it at once (every worker within seconds) and at each start, on top of the FAQ file.

    `answer` is set when the addition is a new entry (`entry_id` its new id), None when it is
    one more phrasing of an existing entry. A removed addition keeps its row (`removed_at`).
    """

    __tablename__ = "faq_additions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    entry_id: Mapped[str] = mapped_column(String(FAQ_ID_LENGTH), index=True)
    question: Mapped[str] = mapped_column(Text)
    answer: Mapped[str | None] = mapped_column(Text, nullable=True)
    operator: Mapped[str] = mapped_column(String(OPERATOR_NAME_LENGTH))
    conversation_id: Mapped[str | None] = mapped_column(String(ID_LENGTH), nullable=True)
    message_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    removed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    removed_by: Mapped[str | None] = mapped_column(String(OPERATOR_NAME_LENGTH), nullable=True)


class Original(Base):
    """A customer's message as written, before PII redaction: the operator holding the
    conversation may read it until `expires_at` (storage.original_text_hours), when the sweeper
    deletes it. Nothing else (history, exports, training data, logs) ever reads this table."""

    __tablename__ = "originals"

    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id"), primary_key=True)
    conversation_id: Mapped[str] = mapped_column(String(ID_LENGTH), index=True)
    text: Mapped[str] = mapped_column(Text)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class LoginFailure(Base):
    """Failed operator sign-ins under one key: a digest of (name, address) or of an address,
    so that neither a typed name nor an address is stored. Every worker's throttle reads and
    writes these, and they outlive restarts (bot/operators/auth.py LoginThrottle)."""

    __tablename__ = "login_failures"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer)
    last_at: Mapped[float] = mapped_column(Float)  # wall-clock seconds of the latest failure


class LearningSignal(Base):
    """One thing a customer or an operator did that says which entry a wording means, or does
    not mean (bot/learning/): a 'Did you mean' pick (`pick`), 'none of these' (`none`, one row
    per entry offered), a thumbs up or down on a direct answer (`up`, `down`), an operator's
    answer from an entry (`operator`). `wording` is the customer's message as stored (PII
    redacted; one that carried PII is never recorded); `source` is a digest of who gave it (a
    client address, a Telegram user), never the address itself."""

    __tablename__ = "learning_signals"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))
    entry_id: Mapped[str] = mapped_column(String(FAQ_ID_LENGTH))
    wording: Mapped[str] = mapped_column(Text)
    conversation_id: Mapped[str] = mapped_column(String(ID_LENGTH), index=True)
    message_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    source: Mapped[str] = mapped_column(String(SOURCE_LENGTH), index=True)
    channel: Mapped[str] = mapped_column(String(CHANNEL_LENGTH))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow,
                                                 index=True)


class LearningReview(Base):
    """An operator's word on a learnt (or candidate) phrasing: `approved` makes it count at
    once, `removed` keeps it out whatever customers say; the latest review of a (wording,
    entry) pair is the one that holds."""

    __tablename__ = "learning_reviews"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    entry_id: Mapped[str] = mapped_column(String(FAQ_ID_LENGTH))
    wording: Mapped[str] = mapped_column(Text)
    decision: Mapped[str] = mapped_column(String(16))
    operator: Mapped[str] = mapped_column(String(OPERATOR_NAME_LENGTH))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
