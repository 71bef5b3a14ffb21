"""FAQ additions from the inbox: an operator turns a good answer into a new FAQ entry, or a
customer's question into one more phrasing of an entry, and the bot answers it from then on;
or marks a customer's question as one no entry answers ("not our topic"), and the classifier
scoring learns it as out of scope (retrieval.out_of_scope), so the bot stops answering it and
questions like it from the FAQ.

Additions live in the database (table faq_additions, migration 0006), on top of the FAQ file:
the process that takes one adds it to its index at once; every bot process (web workers,
Telegram) reads the new ones before a turn, at most every `operators.faq_sync_seconds`, and
all of them at start-up. Removing one marks its row, and each process takes it out of its
index the same way. `supportbot operator faq` prints them as FAQ YAML to merge into the file
(docs/operators.md).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Container, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.exc import SQLAlchemyError

from bot.errors import StorageError
from bot.learning.trust import wording_key as question_key
from bot.operators.store import ConflictError, NotFoundError
from bot.safety.layer import SafetyLayer
from bot.storage import ConversationStore
from bot.storage.models import FAQ_ID_LENGTH, FaqAddition, OperatorAction, as_utc, utcnow
from retrieval.calibration import ensure_calibrated
from retrieval.corpus import FaqEntry
from retrieval.errors import RetrievalError
from retrieval.index import FaqIndex

log = logging.getLogger(__name__)
# question_key: how two phrasings are compared for 'the same question' (case, width, spaces,
# end marks), the same key learning from use compares customers' wordings by.
MAX_QUESTION_CHARS = 500
MAX_ANSWER_CHARS = 4000
_SLUG = re.compile(r"[^a-z0-9]+")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
# The entry_id of an out-of-scope question: no FAQ entry can have an empty id (corpus.py).
OUT_OF_SCOPE = ""


@dataclass(frozen=True)
class Addition:
    """One stored addition, as the API lists it."""

    id: int
    entry_id: str
    question: str
    answer: str | None  # set: a new entry; None: a phrasing of entry_id (or out of scope)
    operator: str
    conversation_id: str | None
    message_id: int | None
    created_at: datetime
    removed_at: datetime | None = None
    removed_by: str | None = None

    @property
    def kind(self) -> str:
        if self.entry_id == OUT_OF_SCOPE:
            return "out_of_scope"
        return "entry" if self.answer is not None else "phrasing"


def entry_id_for(question: str, taken: Container[str]) -> str:
    """A new entry's id from its question: a slug of its first words, numbered if taken."""
    words = _SLUG.sub("-", question_key(question)).strip("-").split("-")[:6]
    base = "-".join(w for w in words if w)[:48] or "entry"
    candidate, n = base, 2
    while candidate in taken:
        candidate, n = f"{base}-{n}", n + 1
    return candidate


class FaqLearning:
    """Stores additions and keeps one process's index (and safety layer) up to date."""

    def __init__(self, store: ConversationStore, index: FaqIndex,
                 safety: SafetyLayer | None = None, sync_seconds: float = 2.0) -> None:
        self.store = store
        self.index = index
        self.safety = safety
        self.sync_seconds = sync_seconds
        self._engine = store.engine
        self._seen = 0  # the highest addition id this index holds (or skipped)
        self._applied: dict[int, tuple[str, str]] = {}  # id: (entry id, question) in the index
        self._checked = float("-inf")
        self._lock = asyncio.Lock()

    async def sync(self, force: bool = False) -> int:
        """Add the additions stored since the last sync to the index; returns how many.

        Throttled to one database read per `sync_seconds` unless forced. A database error is
        logged and the turn goes on with the index as it is.
        """
        if not force and time.monotonic() - self._checked < self.sync_seconds:
            return 0
        async with self._lock:
            if not force and time.monotonic() - self._checked < self.sync_seconds:
                return 0
            self._checked = time.monotonic()
            try:
                rows = await self._read(select(FaqAddition).where(
                    FaqAddition.id > self._seen, FaqAddition.removed_at.is_(None))
                    .order_by(FaqAddition.id))
                gone = await self._read(select(FaqAddition).where(
                    FaqAddition.id.in_(list(self._applied)),
                    FaqAddition.removed_at.is_not(None))) if self._applied else []
            except StorageError as exc:
                log.warning("FAQ additions not read: %s", exc)
                return 0
            if gone:
                pairs = [self._applied.pop(row.id) for row in gone]
                # an entry taken back goes with every phrasing it has, added later ones too
                pairs += [(row.entry_id, q) for row in gone if row.answer is not None
                          and row.entry_id in self.index.by_id
                          for q in self.index.by_id[row.entry_id].questions]
                removed = await asyncio.to_thread(self._remove, pairs)
                log.info("FAQ additions: %d phrasings taken back", removed)
            if not rows:
                return 0
            self._seen = max(self._seen, max(r.id for r in rows))
            try:
                return await asyncio.to_thread(self._apply, rows)
            except RetrievalError as exc:  # an embedding failure, say: the bot goes on without
                log.error("FAQ additions %d-%d not added: %s", rows[0].id, rows[-1].id, exc)
                return 0

    def _apply(self, rows: Sequence[Addition]) -> int:
        """Add rows to the index, skipping (with a log line) those the FAQ file made moot."""
        entries: list[FaqEntry] = []
        phrasings: list[tuple[str, str]] = []
        outside: list[str] = []
        known = set(self._owners())
        ids = set(self.index.by_id)
        for row in rows:
            key = question_key(row.question)
            if row.entry_id == OUT_OF_SCOPE and key in known:
                log.info("FAQ addition %d skipped: %r is a phrasing now, not out of scope",
                         row.id, row.question)
            elif row.entry_id == OUT_OF_SCOPE:
                self._applied[row.id] = (OUT_OF_SCOPE, row.question)
                outside.append(row.question)
            elif key in known:
                log.info("FAQ addition %d skipped: %r is already a phrasing", row.id, row.question)
            elif row.answer is not None and row.entry_id in ids:
                log.info("FAQ addition %d skipped: entry %r exists (in the FAQ file now?)",
                         row.id, row.entry_id)
            elif row.answer is None and row.entry_id not in ids:
                log.warning("FAQ addition %d skipped: no entry %r to add %r to (removed from "
                            "the FAQ file?)", row.id, row.entry_id, row.question)
            else:
                known.add(key)
                self._applied[row.id] = (row.entry_id, row.question)
                if row.answer is not None:
                    ids.add(row.entry_id)
                    entries.append(FaqEntry(row.entry_id, (row.question,), row.answer))
                else:
                    phrasings.append((row.entry_id, row.question))
        added = self.index.extend(entries, phrasings)
        if outside:
            self.index.outside = (*self.index.outside, *outside)
            log.info("FAQ additions: %d questions out of scope", len(outside))
        self._prepare()
        if self.safety is not None and entries:
            self.safety.learn_faq([e.answer for e in entries])
        if added:
            log.info("FAQ additions: %d new entries, %d new phrasings", len(entries),
                     len(phrasings))
        return added + len(outside)

    def _remove(self, pairs: list[tuple[str, str]]) -> int:
        outside = list(self.index.outside)
        taken = 0
        for entry_id, question in pairs:
            if entry_id == OUT_OF_SCOPE and question in outside:
                outside.remove(question)
                taken += 1
        if taken:
            self.index.outside = outside
        removed = self.index.remove([p for p in pairs if p[0] != OUT_OF_SCOPE])
        self._prepare()
        return removed + taken

    def _prepare(self) -> None:
        """Refit the classifier head and recalibrate the answer threshold here, off the event
        loop (a worker thread), not in the next customer's turn."""
        if self.index.scoring == "classifier":
            self.index.classifier_head()
        ensure_calibrated(self.index)

    async def add(self, operator: str, question: str, *, entry_id: str | None = None,
                  answer: str | None = None, out_of_scope: bool = False,
                  conversation_id: str | None = None,
                  message_id: int | None = None) -> Addition:
        """Store a new phrasing of `entry_id` (answer None), a new entry (answer set; id made
        from the question when None) or, with `out_of_scope`, a question no entry answers, and
        put it in this process's index before returning.

        ConflictError if the question is a phrasing already, is out of scope already, or the
        new id is taken; NotFoundError if the entry of a phrasing does not exist; ValueError for
        a bad field.
        """
        question = " ".join(question.split())
        if not question:
            raise ValueError("question: empty")
        if len(question) > MAX_QUESTION_CHARS:
            raise ValueError(f"question: longer than {MAX_QUESTION_CHARS} characters")
        await self.sync(force=True)  # compare with what other processes added too
        key = question_key(question)
        # every phrasing's key: a walk over the whole FAQ, off the event loop
        owner, outside = await asyncio.to_thread(
            lambda: (self._owners().get(key), {question_key(q) for q in self.index.outside}))
        if key in outside:
            if key in {question_key(q) for e, q in self._applied.values() if e == OUT_OF_SCOPE}:
                raise ConflictError(f"{question!r} is marked out of scope already" + (
                    "" if out_of_scope else ": take that back first"))
            raise ConflictError(f"{question!r} is one of the out-of-scope questions of "
                                "retrieval.out_of_scope" + (
                                    "" if out_of_scope else ": take it out of them first"))
        if out_of_scope:
            if entry_id or answer is not None:
                raise ValueError("out_of_scope: takes neither entry_id nor answer")
            if self.index.scoring != "classifier":
                raise ValueError("out_of_scope: only the classifier scoring learns questions "
                                 f"no entry answers (retrieval.scoring is "
                                 f"'{self.index.scoring}')")
            if owner is not None:
                raise ConflictError(f"{question!r} is a phrasing of entry {owner!r}: take it "
                                    "out of that entry first")
            entry_id = OUT_OF_SCOPE
        elif answer is None:
            if entry_id is None or entry_id not in self.index.by_id:
                raise NotFoundError(f"no FAQ entry {entry_id!r}")
            if owner is not None:
                raise ConflictError(f"{question!r} is already a phrasing of entry {owner!r}")
        else:
            answer = answer.strip()
            if not answer:
                raise ValueError("answer: empty")
            if len(answer) > MAX_ANSWER_CHARS:
                raise ValueError(f"answer: longer than {MAX_ANSWER_CHARS} characters")
            if owner is not None:
                raise ConflictError(f"{question!r} is already a phrasing of entry {owner!r}: "
                                    "add nothing, or correct that entry in the FAQ file")
            if entry_id is None:
                entry_id = entry_id_for(question, self.index.by_id)
            elif not _ID.match(entry_id) or len(entry_id) > FAQ_ID_LENGTH:
                raise ValueError("entry_id: letters, digits, '_', '-' and '.' only, at most "
                                 f"{FAQ_ID_LENGTH}")
            elif entry_id in self.index.by_id:
                raise ConflictError(f"there is already an FAQ entry {entry_id!r}")
        now = utcnow()
        values = {"entry_id": entry_id, "question": question, "answer": answer,
                  "operator": operator, "conversation_id": conversation_id,
                  "message_id": message_id, "created_at": now}
        try:
            async with self._engine.begin() as conn:
                row_id = await conn.scalar(insert(FaqAddition).values(**values)
                                           .returning(FaqAddition.id))
                await conn.execute(insert(OperatorAction).values(
                    operator=operator, action="faq_outside" if out_of_scope else
                    "faq_entry" if answer is not None else "faq",
                    conversation_id=conversation_id, message_id=message_id, created_at=now))
        except SQLAlchemyError as exc:
            raise self.store.error("store the FAQ addition", exc) from exc
        await self.sync(force=True)
        return Addition(int(row_id), **values)  # type: ignore[arg-type]

    async def remove(self, addition_id: int, operator: str) -> Addition:
        """Take an addition back: out of this process's index now, out of the others' at their
        next sync; the row stays, marked removed."""
        now = utcnow()
        try:
            async with self._engine.begin() as conn:
                result = await conn.execute(
                    update(FaqAddition).where(FaqAddition.id == addition_id,
                                              FaqAddition.removed_at.is_(None))
                    .values(removed_at=now, removed_by=operator))
                if not result.rowcount:
                    raise NotFoundError(f"no FAQ addition {addition_id} (or removed already)")
                await conn.execute(insert(OperatorAction).values(
                    operator=operator, action="faq_remove", created_at=now))
        except SQLAlchemyError as exc:
            raise self.store.error("remove the FAQ addition", exc) from exc
        await self.sync(force=True)
        rows = await self._read(select(FaqAddition).where(FaqAddition.id == addition_id))
        return rows[0]

    async def additions(self, include_removed: bool = False) -> list[Addition]:
        """Every addition, oldest first."""
        return await stored_additions(self.store, include_removed)

    def _owners(self) -> dict[str, str]:
        """Every live phrasing's question_key, and the (first) entry that has it."""
        owners: dict[str, str] = {}
        for entry in self.index.live_entries():
            for question in entry.questions:
                owners.setdefault(question_key(question), entry.id)
        return owners

    async def _read(self, statement: Any) -> list[Addition]:
        return await _read(self.store, statement)


async def stored_additions(store: ConversationStore,
                           include_removed: bool = False) -> list[Addition]:
    """Every addition in the database, oldest first."""
    statement = select(FaqAddition).order_by(FaqAddition.id)
    if not include_removed:
        statement = statement.where(FaqAddition.removed_at.is_(None))
    return await _read(store, statement)


async def _read(store: ConversationStore, statement: Any) -> list[Addition]:
    try:
        async with store.engine.connect() as conn:
            result = await conn.execute(statement)
            return [Addition(r.id, r.entry_id, r.question, r.answer, r.operator,
                             r.conversation_id, r.message_id, as_utc(r.created_at),
                             None if r.removed_at is None else as_utc(r.removed_at),
                             r.removed_by) for r in result.all()]
    except SQLAlchemyError as exc:
        raise store.error("read the FAQ additions", exc) from exc


def additions_yaml(additions: Sequence[Addition]) -> str:
    """The additions as FAQ YAML: new entries whole, phrasings grouped under their entry's id
    (to copy into the entry of that id in the FAQ file)."""
    import yaml

    entries: dict[str, dict[str, object]] = {}
    for a in additions:
        if a.entry_id == OUT_OF_SCOPE:
            continue  # out_of_scope_lines: they go in the retrieval.out_of_scope file
        item = entries.setdefault(a.entry_id, {"id": a.entry_id, "questions": []})
        questions = item["questions"]
        assert isinstance(questions, list)
        questions.append(a.question)
        if a.answer is not None:
            item["answer"] = a.answer
    for item in entries.values():
        if "answer" not in item:
            item["note"] = "more phrasings of this existing entry"
    return yaml.safe_dump(list(entries.values()), allow_unicode=True, sort_keys=False,
                          width=96)


def out_of_scope_lines(additions: Sequence[Addition]) -> str:
    """The out-of-scope questions, one per line: the format of a retrieval.out_of_scope file."""
    return "".join(f"{a.question}\n" for a in additions if a.entry_id == OUT_OF_SCOPE)
