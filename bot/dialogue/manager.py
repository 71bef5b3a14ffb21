"""DialogueManager: turns a UserMessage into a stream of verified text and one final BotReply.

The streaming contract lives here (what a turn yields, stores and returns); the decision is
bot/dialogue/policy.py, the generated band generated.py, storing a turn persistence.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

from bot.actions.book import ActionBook
from bot.dialogue.persistence import store_turn, stored_id, stored_reply
from bot.dialogue.policy import decide
from bot.dialogue.turn import Event, TokenSink, Turn
from bot.errors import ConversationBusyError
from bot.generation.base import Generator
from bot.generation.batching import BatchingGenerator, as_batching
from bot.generation.ranking import checker_for
from bot.intents import Intents
from bot.learning import UseLearning
from bot.safety.layer import SafetyLayer
from bot.settings import DialogueSettings, GenerationSettings, PersonaSettings, RetrievalSettings
from bot.storage import ConversationStore, Message
from bot.storage.models import COMMENT_LENGTH
from bot.types import BotReply, ConversationStatus, Decision, TextEvent, TranscriptItem, UserMessage
from retrieval.index import FaqIndex

log = logging.getLogger(__name__)


class DialogueManager:
    """Decides per message: FAQ answer, generated grounded answer, 'Did you mean', fallback with
    a human offer, or handoff. The generator is loaded on first use, never before.

    `stream(message)` is the one API every channel uses: it yields `TextEvent`s of verified text
    and then the authoritative `BotReply`, whose text is exactly the events' text and exactly
    what is stored. Turns of one conversation run in order, different conversations concurrently.
    """

    def __init__(self, index: FaqIndex, store: ConversationStore, persona: PersonaSettings,
                 retrieval: RetrievalSettings, dialogue: DialogueSettings,
                 generation: GenerationSettings | None = None,
                 generator: Callable[[], Generator] | None = None,
                 executor: ThreadPoolExecutor | None = None,
                 safety: SafetyLayer | None = None) -> None:
        self.index = index
        self.store = store
        self.persona = persona
        self.retrieval = retrieval
        self.dialogue = dialogue
        self.generation = generation or GenerationSettings()
        # Input guards before retrieval, output guards on generated text, PII redacted in what
        # is stored; None runs no guard (policy tests; the runtime always builds one).
        self.safety = safety
        self._generator_factory = generator
        self._generator: BatchingGenerator | None = None
        self._generator_lock = threading.Lock()
        # Embedding (retrieval, grounding checks) runs here; generation has its own thread.
        # executor, checker and undecided are shared with policy.py and generated.py.
        self.executor = executor or ThreadPoolExecutor(2, thread_name_prefix="retrieval")
        # Brings in FAQ additions operators made (on any worker) before a turn searches;
        # open_runtime sets it (bot/operators/faq.py), None leaves the index as it is.
        self.faq_sync: Callable[[], Awaitable[object]] | None = None
        # What customers' picks and ratings teach the index (bot/learning/); the runtime sets it.
        self.learning: UseLearning | None = None
        # The declared actions and their caller (bot/actions/); the runtime sets it.
        self.actions: ActionBook | None = None
        self.intents = Intents(dialogue.handoff_keywords)
        # Shared with candidate ranking: FAQ sentences are embedded once per embedder.
        self.checker = checker_for(index.embedder)
        # Turns that have not decided yet whether they generate: a starting batch waits for them.
        self.undecided = 0

    @property
    def generator(self) -> BatchingGenerator | None:
        """The generator, loading it now if it is configured and not loaded yet."""
        if self._generator is None and self._generator_factory is not None:
            with self._generator_lock:
                if self._generator is None:
                    generator = as_batching(self._generator_factory())
                    generator.expected = lambda: self.undecided
                    self._generator = generator
        return self._generator

    @property
    def can_generate(self) -> bool:
        """Whether a generator is configured (loaded or not): without one the middle band
        offers 'Did you mean'."""
        return self._generator_factory is not None

    @property
    def generator_loaded(self) -> bool:
        """Whether the model has been loaded (it loads when a turn first needs it)."""
        return self._generator is not None

    @property
    def tokens_generated(self) -> int:
        """New tokens the model has generated since it was loaded (0 before)."""
        return self._generator.tokens_generated if self._generator is not None else 0

    async def ping(self) -> None:
        """Raise StorageError unless the database answers."""
        await self.store.ping()

    def close(self) -> None:
        """Stop the generator's worker (cancelling what runs) and release the model."""
        with self._generator_lock:
            generator, self._generator = self._generator, None
        if generator is not None:
            generator.close()
        self.executor.shutdown(wait=False, cancel_futures=True)

    async def handle(self, message: UserMessage, on_token: TokenSink | None = None) -> BotReply:
        """Run a turn to its end and return the reply; `on_token` gets the verified pieces.

        If `on_token` raises, the turn stops (generation included) and the error propagates.
        """
        reply: BotReply | None = None
        async with contextlib.aclosing(self.stream(message)) as events:
            async for event in events:
                if isinstance(event, TextEvent):
                    if on_token is not None:
                        on_token(event.text)
                elif isinstance(event, BotReply):
                    reply = event
        assert reply is not None
        return reply

    async def stream(self, message: UserMessage) -> AsyncGenerator[Event, None]:
        """Verified text events, then the final reply; the turn is stored before that reply.

        Any failure inside the turn becomes an apology (decision `error`), logged and stored;
        a turn that waits longer than storage.turn_lock_seconds for the conversation's previous
        one gets persona.busy_text instead, and nothing is stored (the customer sends it again);
        if the consumer goes away, generation stops and what was shown is stored. A conversation
        id over 128 characters is the channel's mistake: InputError, before anything runs.
        """
        self.store.check_ids(message)
        started = time.perf_counter()
        turn = Turn()
        reply: BotReply | None = None
        earlier: Message | None = None
        async with contextlib.AsyncExitStack() as held:
            try:
                # Inside the boundary: a database that cannot be reached is an apology too.
                await held.enter_async_context(self.store.turn_lock(message.conversation_id))
                if message.client_id is not None:  # re-sent: its stored reply, not a new turn
                    earlier = await self.store.find_reply(
                        message.conversation_id, await stored_id(self.safety, message.client_id))
                if earlier is not None:
                    reply = self.stored_reply(earlier)
                    reply = replace(reply, meta={**reply.meta, "duplicate": True})
                    turn.shown.append(reply.text)
                    yield TextEvent(reply.text)
                    yield reply
                    return
                async for event in self._turn(message, turn):
                    if isinstance(event, TextEvent):
                        turn.shown.append(event.text)
                        yield event
                    elif isinstance(event, BotReply):
                        reply = event
                    else:  # what the turn is doing (an action's call): not part of the reply
                        yield event
            except ConversationBusyError as exc:  # its previous turn still runs: not this one
                log.warning("turn refused: %s", exc)
                text = self.persona.render(self.persona.busy_text)
                yield TextEvent(text)
                yield BotReply(text, Decision.ERROR, message.conversation_id,
                               meta={"error": "busy", "stored": False},
                               latency_ms=round((time.perf_counter() - started) * 1000, 2))
                return
            except (GeneratorExit, asyncio.CancelledError):
                if earlier is None:  # a re-sent message's reply is stored already
                    turn.meta["interrupted"] = True
                    await self._store(message, self._partial(message, turn, started), turn)
                raise
            except Exception as exc:
                log.exception("turn failed in conversation %s", message.conversation_id)
                apology = ("\n" if turn.shown else "") + self.persona.render(
                    self.persona.error_text)
                turn.shown.append(apology)
                turn.meta["error"] = f"{type(exc).__name__}: {exc}"
                turn.decision = Decision.ERROR
                yield TextEvent(apology)
                reply = self._partial(message, turn, started)
            assert reply is not None
            reply = replace(reply, latency_ms=round((time.perf_counter() - started) * 1000, 2))
            if reply.text != turn.text:  # the contract: stored and returned == shown
                raise AssertionError("reply text differs from the text shown")
            reply = await self._store(message, reply, turn)
        yield reply

    def decided(self, turn: Turn) -> None:
        """The turn knows now whether it generates (and if so, has queued its request)."""
        if turn.undecided:
            turn.undecided = False
            self.undecided -= 1

    async def _store(self, message: UserMessage, reply: BotReply, turn: Turn) -> BotReply:
        """Store the turn (bot/dialogue/persistence.py): the reply with redacted meta."""
        return await store_turn(self.store, self.safety, self.dialogue, message, reply, turn)

    def _partial(self, message: UserMessage, turn: Turn, started: float) -> BotReply:
        """The reply of an interrupted or failed turn: exactly what it has shown."""
        return BotReply(turn.text, turn.decision, message.conversation_id, sources=turn.sources,
                        meta=turn.meta.copy(),
                        latency_ms=round((time.perf_counter() - started) * 1000, 2))

    def stored_reply(self, message: Message) -> BotReply:
        """A stored bot message as a reply again (sources looked up in today's FAQ)."""
        return stored_reply(self.index.by_id, message)

    async def transcript(self, conversation_id: str) -> list[TranscriptItem]:
        """A conversation's messages, oldest first, with the bot's replies and their ratings."""
        return [TranscriptItem(m.role, m.text, m.created_at, m.id, m.client_id,
                               self.stored_reply(m) if m.role == "bot" else None, rating,
                               (m.meta or {}).get("operator") if m.role == "operator" else None,
                               m.role == "user" and "claimed_by" in (m.meta or {}))
                for m, rating in await self.store.transcript(conversation_id)]

    async def feedback(self, conversation_id: str, message_id: int, rating: str,
                       comment: str | None = None, *, source: str | None = None,
                       channel: str = "web") -> bool:
        """Store a customer's rating of a bot message; False if it is not one of this
        conversation's bot messages. InputError for a rating other than up / down. The comment
        is redacted like the turns (one too long is the store's error to give). A rating of a
        direct FAQ answer is a learning signal of `source` (who rated: bot/learning/)."""
        safety = self.safety
        if (comment is not None and len(comment) <= COMMENT_LENGTH and safety is not None
                and safety.settings.redact_stored):
            comment = (await asyncio.to_thread(safety.redact, comment))[:COMMENT_LENGTH]
        stored = await self.store.record_feedback(conversation_id, message_id, rating, comment)
        if stored and self.learning is not None:
            rated = await self.store.bot_message(conversation_id, message_id)
            if rated is not None:
                await self.learning.rated(conversation_id, rated, rating,
                                          source or f"{channel}:unknown", channel)
        return stored

    async def status(self, conversation_id: str) -> ConversationStatus:
        """Who answers the conversation now (bot, or a human after a handoff)."""
        return await self.store.conversation_status(conversation_id)

    async def _turn(self, message: UserMessage, turn: Turn) -> AsyncIterator[Event]:
        """The policy; yields text events and then one reply whose text is their sum."""
        reply: BotReply | None = None
        self.undecided += 1
        turn.undecided = True
        try:
            async for event in decide(self, message, turn):
                if isinstance(event, BotReply):
                    reply = event
                else:
                    yield event
        finally:
            self.decided(turn)
        assert reply is not None
        if not turn.shown and reply.text:  # a reply that was not streamed goes out as one piece
            turn.decision = reply.decision
            yield TextEvent(reply.text)
        yield reply
