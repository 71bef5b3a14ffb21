"""`UseLearning`: records what customers and operators do after the bot's replies, and keeps
one process's index up to date with the phrasings that became trusted (bot/learning/trust.py).

Every process (web workers, Telegram) reads the signals before a turn, at most every
`operators.faq_sync_seconds`; the same rows give every process the same learnt phrasings. A
change refits the classifier head (from the last one) and recalibrates the thresholds off the
event loop, like the operators' FAQ additions (bot/operators/faq.py).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable, Sequence
from datetime import datetime

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from bot.errors import StorageError
from bot.learning.store import MAX_WORDING_CHARS, SignalStore
from bot.learning.trust import APPROVED, REMOVED, Learnt, Signal, judge, wording_key
from bot.safety.layer import SafetyLayer
from bot.settings import LearningSettings
from bot.storage import ConversationStore, Message
from bot.storage.models import LearningReview, LearningSignal, utcnow
from bot.types import Decision
from retrieval.calibration import ensure_calibrated
from retrieval.errors import RetrievalError
from retrieval.index import FaqIndex

log = logging.getLogger(__name__)
_PLACEHOLDER = re.compile(r"<[A-Z][A-Z_]+>")  # a redacted value (bot/shared/pii.py)
MAX_SIGNALS = 20000  # the newest signals judged; older ones beyond this no longer count


class UseLearning:
    """Signals in, learnt phrasings out, for one process's index."""

    def __init__(self, store: ConversationStore, index: FaqIndex, settings: LearningSettings,
                 safety: SafetyLayer | None = None, sync_seconds: float = 2.0,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.store = store
        self.index = index
        self.settings = settings
        self.safety = safety
        self.sync_seconds = sync_seconds
        self.signals = SignalStore(store, settings, clock)
        self.items: list[Learnt] = []  # every candidate, as last judged
        self._vectors: dict[str, np.ndarray] = {}  # wording key: its unit vector
        self._applied: dict[tuple[str, str], str] = {}  # (key, entry): the wording in the index
        self._doubts: dict[str, np.ndarray] = {}  # entry: vectors of wordings it is doubted for
        self._stamp: tuple[int, int, int, int] | None = None
        self._checked = float("-inf")
        self._lock = asyncio.Lock()

    # --- what customers and operators do -----------------------------------------------------

    async def after_clarify(self, conversation_id: str, clarify: Message, picked: str | None,
                            source: str, channel: str) -> int:
        """A pick after 'Did you mean' (`picked`), or 'none of these' (None): a signal for the
        wording the bot was unsure of. Returns the signals stored (0: not learnable)."""
        offered = list(clarify.faq_ids or [])
        wording = await self._wording(conversation_id, clarify)
        if wording is None:
            return 0
        if picked is not None:
            return await self._record("pick", [picked], wording, conversation_id, source,
                                      channel, clarify.id)
        return await self._record("none", offered, wording, conversation_id, source, channel,
                                  clarify.id)

    async def rated(self, conversation_id: str, message: Message, rating: str, source: str,
                    channel: str) -> int:
        """A thumbs up or down on a direct FAQ answer: a (weak) positive or a negative for the
        wording it answered; other replies' ratings teach nothing."""
        if message.decision != Decision.ANSWER.value or not message.faq_ids:
            return 0
        if (message.meta or {}).get("intent"):
            return 0
        if not isinstance((message.meta or {}).get("retrieval_query"), str):
            return 0  # not the answer to a search (to a pick after "Did you mean": "2")
        wording = await self._wording(conversation_id, message)
        if wording is None:
            return 0
        return await self._record("up" if rating == "up" else "down", [message.faq_ids[0]],
                                  wording, conversation_id, source, channel, message.id)

    async def operator_answered(self, conversation_id: str, operator: str, entry_id: str,
                                wording: str, message_id: int | None = None) -> int:
        """An operator answered the customer's `wording` with entry `entry_id`: trusted."""
        text = await self._learnable(wording)
        if text is None or entry_id not in self.index.by_id:
            return 0
        stored = await self._record("operator", [entry_id], text, conversation_id,
                                    f"operator:{operator}", "operator", message_id)
        await self.sync(force=True)
        return stored

    async def review(self, wording: str, entry_id: str, decision: str, operator: str) -> Learnt:
        """An operator approves ('approved') or removes ('removed') a candidate; KeyError if no
        signal named that wording for that entry."""
        if decision not in (APPROVED, REMOVED):
            raise ValueError(f"decision must be {APPROVED!r} or {REMOVED!r}")
        await self.sync(force=True)
        key = (wording_key(wording), entry_id)
        found = next((item for item in self.items if item.key == key), None)
        if found is None:
            raise KeyError(f"nothing learnt or signalled for {wording!r} as entry {entry_id!r}")
        await self.signals.review(found.wording, entry_id, decision, operator)
        await self.sync(force=True)
        return next(item for item in self.items if item.key == key)

    # --- keeping the index up to date ----------------------------------------------------------

    async def sync(self, force: bool = False) -> int:
        """Judge the signals again when they changed, and put the phrasings that became trusted
        into the index (taking out those no longer trusted); returns how many changed."""
        if not self.settings.enabled:
            return 0
        if not force and time.monotonic() - self._checked < self.sync_seconds:
            return 0
        async with self._lock:
            if not force and time.monotonic() - self._checked < self.sync_seconds:
                return 0
            self._checked = time.monotonic()
            try:
                stamp = await self._read_stamp()
                if stamp == self._stamp:
                    return 0
                signals = (await self.signals.signals())[-MAX_SIGNALS:]
                reviews = await self.signals.reviews()
            except StorageError as exc:
                log.warning("learning signals not read: %s", exc)
                return 0
            try:
                changed = await asyncio.to_thread(self._update, signals, reviews)
            except RetrievalError as exc:
                log.error("learnt phrasings not applied: %s", exc)
                return 0
            self._stamp = stamp
            return changed

    def _update(self, signals: Sequence[Signal],
                reviews: dict[tuple[str, str], tuple[str, str]]) -> int:
        new = sorted({wording_key(s.wording): s.wording for s in signals
                      if wording_key(s.wording) not in self._vectors}.items())
        if new:
            vectors = self.index.embedder.embed([w for _, w in new])
            self._vectors.update(zip([k for k, _ in new], vectors, strict=True))
        matrix = (np.stack([self._vectors[wording_key(s.wording)] for s in signals])
                  if signals else np.zeros((0, self.index.embedder.dimension), np.float32))
        items = judge(signals, matrix, self.settings.confirmations, self.settings.similarity,
                      reviews)
        self.items = items
        doubts: dict[str, list[np.ndarray]] = {}
        for item in items:
            if item.state == "doubt":
                doubts.setdefault(item.entry_id, []).append(self._vectors[item.key[0]])
        self._doubts = {e: np.stack(v) for e, v in doubts.items()}
        wanted = {item.key: item.wording for item in items if item.state == "learnt"
                  and item.entry_id in self.index.by_id}
        dropped = [key for key in self._applied if key not in wanted]
        gone = [(key[1], self._applied.pop(key)) for key in dropped]
        owners = self._owners()
        adding = []
        for key, wording in wanted.items():
            if key in self._applied:
                continue
            if key[0] in owners:  # a phrasing of the FAQ already (or an operator's addition)
                continue
            self._applied[key] = wording
            adding.append((key[1], wording))
        if not adding and not gone:
            return 0
        removed = self.index.remove(gone) if gone else 0
        added = self.index.extend((), adding) if adding else 0
        if self.index.scoring == "classifier":
            self.index.classifier_head()
        ensure_calibrated(self.index)
        log.info("learning: %d phrasings learnt, %d taken back", added, removed)
        return added + removed

    def doubts(self, entry_id: str) -> bool:
        """Whether any wording is doubted for `entry_id` (no embedding needed when not)."""
        return entry_id in self._doubts

    def doubted(self, entry_id: str, vector: np.ndarray) -> bool:
        """Whether customers agreed that a wording this near does not mean `entry_id`."""
        doubts = self._doubts.get(entry_id)
        if doubts is None:
            return False
        return bool((doubts @ np.asarray(vector, np.float32).reshape(-1)).max()
                    >= self.settings.similarity - 1e-6)

    @property
    def learnt(self) -> list[Learnt]:
        """The learnt phrasings in the index now."""
        return [item for item in self.items if item.key in self._applied]

    # --- helpers -------------------------------------------------------------------------------

    async def _read_stamp(self) -> tuple[int, int, int, int]:
        try:
            async with self.store.engine.connect() as conn:
                signals = (await conn.execute(select(func.count(), func.max(LearningSignal.id))
                                              )).one()
                reviews = (await conn.execute(select(func.count(), func.max(LearningReview.id))
                                              )).one()
        except SQLAlchemyError as exc:
            raise self.store.error("read the learning signals", exc) from exc
        return (int(signals[0]), int(signals[1] or 0), int(reviews[0]), int(reviews[1] or 0))

    def _owners(self) -> set[str]:
        """The keys of every live phrasing this learning did not add."""
        ours = {key[0] for key in self._applied}
        return {wording_key(q) for entry in self.index.live_entries() for q in entry.questions
                } - ours

    async def _wording(self, conversation_id: str, reply: Message) -> str | None:
        """The customer's message that `reply` answered, if it may be learnt: not a follow-up
        searched together with the question before it, no PII, not too long."""
        try:
            message = await self.store.user_message_before(conversation_id, reply.id)
        except StorageError as exc:
            log.warning("learning: the message before %d not read: %s", reply.id, exc)
            return None
        if message is None:
            return None
        searched = (reply.meta or {}).get("retrieval_query")
        if isinstance(searched, str) and wording_key(searched) != wording_key(message.text):
            return None  # a follow-up ("and for a card?") is not a question on its own
        if any(not v.get("allowed", True) for v in message.verdicts or []):
            return None
        return await self._learnable(message.text)

    async def _learnable(self, text: str) -> str | None:
        text = " ".join(text.split())
        if not text or len(text) > MAX_WORDING_CHARS or _PLACEHOLDER.search(text):
            return None
        if self.safety is not None:
            redacted = await asyncio.to_thread(self.safety.redactor.redact, text)
            if redacted[0] != text:
                return None  # a wording that carries PII is never learnt
        return text

    async def _record(self, kind: str, entries: list[str], wording: str, conversation_id: str,
                      source: str, channel: str, message_id: int | None) -> int:
        if not self.settings.enabled:
            return 0
        try:
            return await self.signals.record(kind, entries, wording, conversation_id, source,
                                             channel, message_id)
        except StorageError as exc:
            log.warning("learning signal not stored: %s", exc)
            return 0
