"""OperatorStore: operator accounts, claims of handed-off conversations, replies, and the log
of what each operator did, in the conversation database (tables of migration 0005).

Claims are conditional UPDATEs, so two operators claiming at once cannot both win, on SQLite
and PostgreSQL alike; each change and its log entry are one transaction.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from bot.errors import InputError
from bot.storage import ConversationStore
from bot.storage.models import (
    Conversation,
    LoginFailure,
    Message,
    Operator,
    OperatorAction,
    as_utc,
    utcnow,
)
from bot.types import ConversationStatus, Decision

HANDOFF = ConversationStatus.HANDOFF.value
NOTICE = Decision.NOTICE.value
INBOX_LIMIT = 500


class ConflictError(Exception):
    """The conversation is not in a state that allows the action (held by someone else, not
    handed off); the message says why."""


class NotFoundError(Exception):
    """No such conversation."""


@dataclass(frozen=True)
class Account:
    """An operator account as sign-in and session checks see it."""

    password_hash: str
    sessions_after: datetime | None  # cookies issued before this no longer work


def _aware(value: datetime | None) -> datetime | None:
    return None if value is None else as_utc(value)


@dataclass(frozen=True)
class InboxItem:
    """A handed-off conversation as the inbox lists it."""

    conversation_id: str
    channel: str
    waiting_since: datetime | None
    claimed_by: str | None
    claimed_at: datetime | None
    last_text: str | None  # the customer's latest message
    last_at: datetime | None


class OperatorStore:
    """Operators' tables, through the conversation store's engine."""

    def __init__(self, conversations: ConversationStore) -> None:
        self.conversations = conversations
        self._engine = conversations.engine

    # --- accounts ----------------------------------------------------------------------------

    async def add(self, name: str, password_hash: str) -> None:
        """Create an account; InputError if the name is taken."""
        try:
            async with self._engine.begin() as conn:
                await conn.execute(insert(Operator).values(name=name,
                                                           password_hash=password_hash,
                                                           created_at=utcnow()))
        except IntegrityError:
            raise InputError(f"there is already an operator named {name!r}") from None
        except SQLAlchemyError as exc:
            raise self.conversations.error("add an operator", exc) from exc

    async def remove(self, name: str) -> bool:
        """Delete an account (its sessions stop working); False if there was none."""
        try:
            async with self._engine.begin() as conn:
                result = await conn.execute(delete(Operator).where(Operator.name == name))
        except SQLAlchemyError as exc:
            raise self.conversations.error("remove an operator", exc) from exc
        return bool(result.rowcount)

    async def accounts(self) -> list[tuple[str, datetime]]:
        """Names and creation times, by name."""
        rows = await self._rows(select(Operator.name, Operator.created_at)
                                .order_by(Operator.name))
        return [(r.name, r.created_at) for r in rows]

    async def password_hash(self, name: str) -> str | None:
        """The stored hash of an operator's password; None if there is no such operator."""
        account = await self.account(name)
        return None if account is None else account.password_hash

    async def account(self, name: str) -> Account | None:
        """What sign-in and session checks need of an account; None if there is none."""
        rows = await self._rows(select(Operator.password_hash, Operator.sessions_after)
                                .where(Operator.name == name))
        if not rows:
            return None
        row = rows[0]
        return Account(row.password_hash, _aware(row.sessions_after))

    async def login_failures(self, keys: list[str]) -> dict[str, tuple[int, float]]:
        """The failed sign-ins kept under `keys` (by every worker, also before a restart)."""
        rows = await self._rows(select(LoginFailure.key, LoginFailure.failures,
                                       LoginFailure.last_at).where(LoginFailure.key.in_(keys)))
        return {r.key: (int(r.failures), float(r.last_at)) for r in rows}

    async def keep_login_failures(self, entries: Mapping[str, tuple[int, float] | None],
                                  stale_before: float | None = None) -> None:
        """Write the throttle's entries (None deletes the key); with `stale_before`, also
        forget every key whose last failure is older (the table stays small)."""
        backend = self.conversations.backend
        try:
            async with self._engine.begin() as conn:
                if stale_before is not None:
                    await conn.execute(delete(LoginFailure)
                                       .where(LoginFailure.last_at < stale_before))
                gone = [key for key, entry in entries.items() if entry is None]
                if gone:
                    await conn.execute(delete(LoginFailure).where(LoginFailure.key.in_(gone)))
                for key, entry in entries.items():
                    if entry is None:
                        continue
                    values = {"key": key, "failures": entry[0], "last_at": entry[1]}
                    if backend in ("sqlite", "postgresql"):
                        upsert = (sqlite.insert if backend == "sqlite" else postgresql.insert)
                        statement = upsert(LoginFailure).values(values)
                        await conn.execute(statement.on_conflict_do_update(
                            index_elements=["key"],
                            set_={"failures": entry[0], "last_at": entry[1]}))
                    else:
                        await conn.execute(delete(LoginFailure).where(LoginFailure.key == key))
                        await conn.execute(insert(LoginFailure).values(values))
        except SQLAlchemyError as exc:
            raise self.conversations.error("count the failed sign-ins", exc) from exc

    async def end_sessions(self, name: str) -> None:
        """Log out: every session cookie of the account issued until now stops working."""
        await self._update_account("end the sessions", name, "logout", sessions_after=utcnow())

    async def _update_account(self, doing: str, name: str, action: str | None = None,
                              **values: Any) -> None:
        """Update an account's row and, with `action`, log it in the same transaction."""
        try:
            async with self._engine.begin() as conn:
                await conn.execute(update(Operator).where(Operator.name == name)
                                   .values(**values))
                if action is not None:
                    await _log(conn, name, action)
        except SQLAlchemyError as exc:
            raise self.conversations.error(doing, exc) from exc

    # --- the inbox ---------------------------------------------------------------------------

    async def inbox(self) -> list[InboxItem]:
        """Handed-off conversations, longest waiting first, with the customer's last message."""
        last = (select(Message.conversation_id, func.max(Message.id).label("last_id"))
                .where(Message.role == "user").group_by(Message.conversation_id).subquery())
        statement = (select(Conversation.id, Conversation.channel,
                            Conversation.status_changed_at, Conversation.claimed_by,
                            Conversation.claimed_at, Message.text, Message.created_at)
                     .outerjoin(last, last.c.conversation_id == Conversation.id)
                     .outerjoin(Message, Message.id == last.c.last_id)
                     .where(Conversation.status == HANDOFF)
                     .order_by(Conversation.status_changed_at, Conversation.id)
                     .limit(INBOX_LIMIT))
        return [InboxItem(*row) for row in await self._rows(statement)]

    async def conversation(self, conversation_id: str) -> Conversation:
        """A conversation's row; NotFoundError if there is none."""
        found = await self.conversations.get_conversation(conversation_id)
        if found is None:
            raise NotFoundError(f"no conversation {conversation_id!r}")
        return found

    async def claim(self, conversation_id: str, operator: str) -> None:
        """Take a handed-off conversation (again, if one's own); ConflictError if another
        operator holds it or it is not handed off."""
        now = utcnow()
        async with self._change("claim", conversation_id) as conn:
            before = (await conn.execute(
                select(Conversation.status_changed_at, Conversation.claimed_by)
                .where(Conversation.id == conversation_id))).first()
            result = await conn.execute(
                update(Conversation)
                .where(Conversation.id == conversation_id, Conversation.status == HANDOFF,
                       or_(Conversation.claimed_by.is_(None),
                           Conversation.claimed_by == operator))
                .values(claimed_by=operator, claimed_at=now, updated_at=now))
            if not result.rowcount:
                await self._refuse(conn, conversation_id, operator)
            waited = None
            if before is not None and before.claimed_by is None \
                    and before.status_changed_at is not None:
                waited = (now - as_utc(before.status_changed_at)).total_seconds()
            await _log(conn, operator, "claim", conversation_id, waited_seconds=waited)

    async def reply(self, conversation_id: str, operator: str, text: str) -> Message:
        """Store an operator's message in a conversation they hold; ConflictError if they
        do not hold it."""
        now = utcnow()
        async with self._change("store the reply", conversation_id) as conn:
            result = await conn.execute(
                update(Conversation)
                .where(Conversation.id == conversation_id, Conversation.status == HANDOFF,
                       Conversation.claimed_by == operator)
                .values(updated_at=now))
            if not result.rowcount:
                await self._refuse(conn, conversation_id, operator, must_hold=True)
            message_id = await conn.scalar(insert(Message).values(
                conversation_id=conversation_id, role="operator", text=text, created_at=now,
                decision=None, faq_ids=[], scores=[], confidence=None, latency_ms=None,
                meta={"operator": operator}).returning(Message.id))
            await _log(conn, operator, "reply", conversation_id, message_id)
        assert message_id is not None
        return await self.message(message_id)

    async def finish(self, conversation_id: str, operator: str,
                     status: ConversationStatus) -> None:
        """Release (status bot) or close (status closed) a handed-off conversation that the
        operator holds or nobody does; the claim is cleared. ConflictError otherwise."""
        action = "release" if status is ConversationStatus.BOT else "close"
        now = utcnow()
        async with self._change(action, conversation_id) as conn:
            result = await conn.execute(
                update(Conversation)
                .where(Conversation.id == conversation_id, Conversation.status == HANDOFF,
                       or_(Conversation.claimed_by.is_(None),
                           Conversation.claimed_by == operator))
                .values(status=status.value, status_changed_at=now, claimed_by=None,
                        claimed_at=None, updated_at=now))
            if not result.rowcount:
                await self._refuse(conn, conversation_id, operator)
            await _log(conn, operator, action, conversation_id)

    async def expected_wait(self, sample: int = 20, days: float = 7) -> float | None:
        """Median minutes from handoff to an operator's claim over the last `sample` claims of
        the last `days` (released and closed conversations included); None without any."""
        statement = (select(OperatorAction.waited_seconds)
                     .where(OperatorAction.action == "claim",
                            OperatorAction.waited_seconds.is_not(None),
                            OperatorAction.created_at >= utcnow() - timedelta(days=days))
                     .order_by(OperatorAction.id.desc()).limit(sample))
        waits = sorted(row.waited_seconds / 60 for row in await self._rows(statement))
        return waits[len(waits) // 2] if waits else None

    async def add_notice(self, conversation_id: str, text: str, waited_since: datetime,
                         meta: dict[str, Any]) -> Message | None:
        """Store a wait notice in a conversation still waiting unclaimed since `waited_since`,
        unless it has one since then; the stored message, or None (claimed, released, or
        noticed already). Callers hold the conversation's turn lock, so workers do not race."""
        async with self._change("store the wait notice", conversation_id) as conn:
            waiting = await conn.scalar(select(Conversation.id).where(
                Conversation.id == conversation_id, Conversation.status == HANDOFF,
                Conversation.claimed_by.is_(None),
                Conversation.status_changed_at == waited_since))
            noticed = await conn.scalar(select(Message.id).where(
                Message.conversation_id == conversation_id, Message.decision == NOTICE,
                Message.created_at >= waited_since))
            if waiting is None or noticed is not None:
                return None
            message_id = await conn.scalar(insert(Message).values(
                conversation_id=conversation_id, role="bot", text=text, created_at=utcnow(),
                decision=NOTICE, faq_ids=[], scores=[], confidence=None, latency_ms=None,
                meta=meta).returning(Message.id))
        assert message_id is not None
        return await self.message(message_id)

    async def message(self, message_id: int) -> Message:
        """One stored message; NotFoundError if there is none."""
        rows = await self._rows(select(Message).where(Message.id == message_id), orm=True)
        if not rows:
            raise NotFoundError(f"no message {message_id}")
        found = rows[0]
        assert isinstance(found, Message)
        return found

    async def correct(self, message_id: int, operator: str, text: str) -> Message:
        """Mark a bot answer wrong and keep the right one (meta `correction`): `supportbot
        export` trains on the correction instead. NotFoundError unless it is a bot message."""
        try:
            async with self._engine.begin() as conn:
                row = (await conn.execute(select(Message.conversation_id, Message.meta).where(
                    Message.id == message_id, Message.role == "bot"))).first()
                if row is None:
                    raise NotFoundError(f"no bot message {message_id}")
                meta = dict(row.meta or {})
                meta["correction"] = {"text": text, "operator": operator,
                                      "at": utcnow().isoformat()}
                await conn.execute(update(Message).where(Message.id == message_id)
                                   .values(meta=meta))
                await _log(conn, operator, "correct", row.conversation_id, message_id)
        except SQLAlchemyError as exc:
            raise self.conversations.error("store the correction", exc) from exc
        return await self.message(message_id)

    async def taught_conversations(self) -> list[str]:
        """Conversations an operator replied in or corrected: training data for export."""
        statement = (select(OperatorAction.conversation_id)
                     .where(OperatorAction.action.in_(("reply", "correct")),
                            OperatorAction.conversation_id.is_not(None))
                     .group_by(OperatorAction.conversation_id)
                     .order_by(func.min(OperatorAction.id)))
        return [str(row[0]) for row in await self._rows(statement)]

    async def log(self, operator: str, action: str, conversation_id: str | None = None) -> None:
        """Log an action that changes nothing else (login, logout)."""
        try:
            async with self._engine.begin() as conn:
                await _log(conn, operator, action, conversation_id)
        except SQLAlchemyError as exc:
            raise self.conversations.error("log an operator action", exc) from exc

    async def actions(self, conversation_id: str | None = None) -> list[OperatorAction]:
        """The action log, oldest first (of one conversation, if given)."""
        statement = select(OperatorAction).order_by(OperatorAction.id)
        if conversation_id is not None:
            statement = statement.where(OperatorAction.conversation_id == conversation_id)
        return [a for a in await self._rows(statement, orm=True)
                if isinstance(a, OperatorAction)]

    # --- helpers -----------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _change(self, doing: str, conversation_id: str
                      ) -> AsyncIterator[AsyncConnection]:
        """A transaction changing a conversation: ConflictError / NotFoundError roll it back,
        storage failures become StorageError."""
        self.conversations.check_id(conversation_id)
        try:
            async with self._engine.begin() as conn:
                yield conn
        except SQLAlchemyError as exc:
            raise self.conversations.error(doing, exc) from exc

    async def _refuse(self, conn: AsyncConnection, conversation_id: str, operator: str,
                      must_hold: bool = False) -> None:
        """Raise the error explaining why a conditional update changed nothing."""
        row = (await conn.execute(select(Conversation.status, Conversation.claimed_by)
                                  .where(Conversation.id == conversation_id))).first()
        if row is None:
            raise NotFoundError(f"no conversation {conversation_id!r}")
        if row.status != HANDOFF:
            raise ConflictError(f"conversation {conversation_id!r} is not waiting for a human "
                                f"(status {row.status})")
        if row.claimed_by is not None and row.claimed_by != operator:
            raise ConflictError(f"{row.claimed_by} holds conversation {conversation_id!r}")
        assert must_hold
        raise ConflictError(f"claim conversation {conversation_id!r} before replying")

    async def _rows(self, statement: Any, orm: bool = False) -> list[Any]:
        try:
            async with self._engine.connect() as conn:
                if orm:
                    async with AsyncSession(bind=conn, expire_on_commit=False) as session:
                        return list((await session.scalars(statement)).all())
                return list((await conn.execute(statement)).all())
        except SQLAlchemyError as exc:
            raise self.conversations.error("read the operators' tables", exc) from exc


async def _log(conn: AsyncConnection, operator: str, action: str,
               conversation_id: str | None = None, message_id: int | None = None,
               waited_seconds: float | None = None) -> None:
    await conn.execute(insert(OperatorAction).values(
        operator=operator, action=action, conversation_id=conversation_id,
        message_id=message_id, created_at=utcnow(), waited_seconds=waited_seconds))
