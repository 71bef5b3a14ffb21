"""DialogueManager: turns a UserMessage into a stream of verified text and one final BotReply."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

from bot.errors import ConversationBusyError, GenerationError, ModelError, StorageError
from bot.generation.base import ChatMessage, Generator
from bot.generation.batching import BatchingGenerator, as_batching
from bot.generation.grounding import SentenceCheck
from bot.generation.prompt import build_prompt
from bot.generation.ranking import checker_for, grounding_scores
from bot.generation.text import tidy_reply
from bot.generation.verified import VerifiedStream, generated_pieces, one_piece
from bot.intents import AFFIRMATIVE, FOLLOW_UP, NEGATIVE, Intents, pick, simple
from bot.safety.layer import SafetyLayer
from bot.safety.normalize import clean
from bot.settings import DialogueSettings, GenerationSettings, PersonaSettings, RetrievalSettings
from bot.shared.prompt import prompt_places
from bot.storage import ConversationStore, Message
from bot.storage.models import CLIENT_ID_LENGTH, COMMENT_LENGTH
from bot.types import (
    BotReply,
    Candidate,
    ConversationStatus,
    Decision,
    Source,
    TextEvent,
    TranscriptItem,
    UserMessage,
)
from retrieval.bands import Band, BandDecision, decide, suggestions
from retrieval.corpus import FaqEntry
from retrieval.index import FaqHit, FaqIndex

log = logging.getLogger(__name__)

Event = TextEvent | BotReply
_Verdicts = tuple[list[dict[str, Any]] | None, list[dict[str, Any]] | None]  # input, output
TokenSink = Callable[[str], None]  # receives verified text pieces, on the event loop

# A short message that starts like a follow-up or points back ("and how long does that take?")
# is also searched together with the previous question; that wins if it scores clearly higher.
_FOLLOW_UP_MAX_WORDS = 10
_FOLLOW_UP_GAIN = 0.05


def normalise(text: str) -> str:
    """Collapse whitespace and strip the ends."""
    return " ".join(text.split())


@dataclass(frozen=True)
class _Retrieved:
    hits: list[FaqHit]
    query: str


@dataclass
class _Turn:
    """What a turn has shown so far, so that an interrupted or failed turn stores exactly that."""

    shown: list[str] = field(default_factory=list)
    decision: Decision = Decision.ERROR
    sources: list[Source] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    undecided: bool = False  # counted in DialogueManager._undecided
    verdicts_in: list[dict[str, Any]] | None = None  # input guards' verdicts, once they ran
    verdicts_out: list[dict[str, Any]] = field(default_factory=list)  # output guards'
    vectors: dict[str, Any] = field(default_factory=dict)  # embeddings the guards made

    @property
    def text(self) -> str:
        return "".join(self.shown)


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
        self._executor = executor or ThreadPoolExecutor(2, thread_name_prefix="retrieval")
        # Brings in FAQ additions operators made (on any worker) before a turn searches;
        # open_runtime sets it (bot/operators/faq.py), None leaves the index as it is.
        self.faq_sync: Callable[[], Awaitable[object]] | None = None
        self.intents = Intents(dialogue.handoff_keywords)
        # Shared with candidate ranking: FAQ sentences are embedded once per embedder.
        self._checker = checker_for(index.embedder)
        # Turns that have not decided yet whether they generate: a starting batch waits for them.
        self._undecided = 0

    @property
    def generator(self) -> BatchingGenerator | None:
        """The generator, loading it now if it is configured and not loaded yet."""
        if self._generator is None and self._generator_factory is not None:
            with self._generator_lock:
                if self._generator is None:
                    generator = as_batching(self._generator_factory())
                    generator.expected = lambda: self._undecided
                    self._generator = generator
        return self._generator

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
        self._executor.shutdown(wait=False, cancel_futures=True)

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
                else:
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
        turn = _Turn()
        reply: BotReply | None = None
        earlier: Message | None = None
        async with contextlib.AsyncExitStack() as held:
            try:
                # Inside the boundary: a database that cannot be reached is an apology too.
                await held.enter_async_context(self.store.turn_lock(message.conversation_id))
                if message.client_id is not None:  # re-sent: its stored reply, not a new turn
                    earlier = await self.store.find_reply(
                        message.conversation_id, await self._stored_id(message.client_id))
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
                    else:
                        reply = event
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

    def _decided(self, turn: _Turn) -> None:
        """The turn knows now whether it generates (and if so, has queued its request)."""
        if turn.undecided:
            turn.undecided = False
            self._undecided -= 1

    def _partial(self, message: UserMessage, turn: _Turn, started: float) -> BotReply:
        return BotReply(turn.text, turn.decision, message.conversation_id, sources=turn.sources,
                        meta=dict(turn.meta),
                        latency_ms=round((time.perf_counter() - started) * 1000, 2))

    async def _store(self, message: UserMessage, reply: BotReply, turn: _Turn) -> BotReply:
        """Store the turn, PII redacted; a storage failure is logged and noted, and the customer
        still has it. The reply returned keeps its text (what was shown), with redacted meta."""
        limit = self.dialogue.max_input_chars
        stored = message if len(message.text) <= limit else replace(message,
                                                                    text=message.text[:limit])
        kept = reply
        verdicts = (turn.verdicts_in, turn.verdicts_out or None)
        original: str | None = None  # the customer's text as written, if redaction changed it
        if self.safety is not None and self.safety.settings.redact_stored:
            # presidio, spaCy and the patterns take a while: off the event loop, like embedding
            stored, kept, verdicts, original = await asyncio.to_thread(
                self._redacted, self.safety, stored, reply, verdicts)
        status = ConversationStatus.HANDOFF if reply.decision is Decision.HANDOFF else None
        if reply.decision is Decision.HELD:  # only the customer's message, for the operator
            try:
                await self.store.record_held(stored, kept.meta, verdicts[0], original)
            except StorageError as exc:
                log.error("held message not stored in conversation %s: %s",
                          message.conversation_id, exc)
                return replace(reply, meta={**reply.meta, "storage_error": str(exc)})
            return reply
        try:
            message_id = await self.store.record_turn(stored, kept, status=status,
                                                      verdicts=verdicts, original=original)
        except StorageError as exc:
            log.error("turn not stored in conversation %s: %s", message.conversation_id, exc)
            return replace(reply, meta={**kept.meta, "storage_error": str(exc)},
                           candidates=kept.candidates)
        return replace(reply, meta=kept.meta, candidates=kept.candidates, message_id=message_id)

    @staticmethod
    def _redacted(safety: SafetyLayer, message: UserMessage, reply: BotReply,
                  verdicts: _Verdicts
                  ) -> tuple[UserMessage, BotReply, _Verdicts, str | None]:
        """The turn as stored: every free text the customer or the bot wrote redacted by the
        one redactor (the FAQ's own contacts kept in the bot's text), the client id and the
        guards' reasons (which may quote the message) too; and the customer's text as written
        (cleaned), when redaction changed it."""
        client_id = (safety.redact_id(message.client_id, CLIENT_ID_LENGTH)
                     if message.client_id is not None else None)
        written = clean(message.text)[0]
        stored = replace(message, text=safety.redact(written), client_id=client_id)
        kept = replace(reply, text=safety.redact(reply.text, keep_faq=True),
                       meta=safety.redact_data(reply.meta),
                       candidates=[replace(c, text=safety.redact(c.text, True))
                                   for c in reply.candidates])
        return (stored, kept, (safety.redact_data(verdicts[0]), safety.redact_data(verdicts[1])),
                written if stored.text != written else None)

    async def _stored_id(self, client_id: str) -> str:
        """A client message id as `_redacted` stores it."""
        safety = self.safety
        if safety is None or not safety.settings.redact_stored:
            return client_id
        return await asyncio.to_thread(safety.redact_id, client_id, CLIENT_ID_LENGTH)

    def stored_reply(self, message: Message) -> BotReply:
        """A stored bot message as a reply again (sources looked up in today's FAQ)."""
        decision = Decision(message.decision or Decision.ERROR.value)
        by_id = self.index.by_id
        used = [Source(i, by_id[i].question if i in by_id else i, score,
                       by_id[i].link if i in by_id else None)
                for i, score in zip(message.faq_ids, message.scores, strict=False)]
        clarify = decision is Decision.CLARIFY
        return BotReply(message.text, decision, message.conversation_id,
                        sources=[] if clarify else used, suggestions=used if clarify else [],
                        confidence=message.confidence or 0.0,
                        latency_ms=message.latency_ms or 0.0, meta=dict(message.meta or {}),
                        message_id=message.id)

    async def transcript(self, conversation_id: str) -> list[TranscriptItem]:
        """A conversation's messages, oldest first, with the bot's replies and their ratings."""
        return [TranscriptItem(m.role, m.text, m.created_at, m.id, m.client_id,
                               self.stored_reply(m) if m.role == "bot" else None, rating,
                               (m.meta or {}).get("operator") if m.role == "operator" else None,
                               m.role == "user" and "claimed_by" in (m.meta or {}))
                for m, rating in await self.store.transcript(conversation_id)]

    async def feedback(self, conversation_id: str, message_id: int, rating: str,
                       comment: str | None = None) -> bool:
        """Store a customer's rating of a bot message; False if it is not one of this
        conversation's bot messages. InputError for a rating other than up / down. The comment
        is redacted like the turns (one too long is the store's error to give)."""
        safety = self.safety
        if (comment is not None and len(comment) <= COMMENT_LENGTH and safety is not None
                and safety.settings.redact_stored):
            comment = (await asyncio.to_thread(safety.redact, comment))[:COMMENT_LENGTH]
        return await self.store.record_feedback(conversation_id, message_id, rating, comment)

    async def status(self, conversation_id: str) -> ConversationStatus:
        """Who answers the conversation now (bot, or a human after a handoff)."""
        return await self.store.conversation_status(conversation_id)

    async def _turn(self, message: UserMessage, turn: _Turn) -> AsyncIterator[Event]:
        """The policy; yields text events and then one reply whose text is their sum."""
        reply: BotReply | None = None
        self._undecided += 1
        turn.undecided = True
        try:
            async for event in self._decide(message, turn):
                if isinstance(event, BotReply):
                    reply = event
                else:
                    yield event
        finally:
            self._decided(turn)
        assert reply is not None
        if not turn.shown and reply.text:  # a reply that was not streamed goes out as one piece
            turn.decision = reply.decision
            yield TextEvent(reply.text)
        yield reply

    async def _decide(self, message: UserMessage, turn: _Turn) -> AsyncIterator[Event]:
        text = normalise(message.text)
        conversation = message.conversation_id
        if not text:
            yield BotReply(self.persona.render(self.persona.empty_text), Decision.INVALID,
                           conversation, confidence=1.0)
            return
        if len(text) > self.dialogue.max_input_chars:
            yield BotReply(
                self.persona.render(self.persona.too_long_text,
                                    max_chars=self.dialogue.max_input_chars),
                Decision.INVALID, conversation, confidence=1.0,
                meta={"input_chars": len(message.text)})
            return
        if self.safety is not None:
            refused = await self._guard_input(message, turn)
            if isinstance(refused, BotReply):
                yield refused
                return
            text = refused
            if not text:  # nothing but invisible characters
                yield BotReply(self.persona.render(self.persona.empty_text), Decision.INVALID,
                               conversation, confidence=1.0)
                return
        row = await self.store.get_conversation(conversation)
        if row is not None and row.status == ConversationStatus.HANDOFF.value \
                and row.claimed_by is not None:
            # An operator holds it: they answer, the bot stays silent (docs/operators.md).
            yield BotReply("", Decision.HELD, conversation, confidence=1.0,
                           meta={"claimed_by": row.claimed_by})
            return
        if row is not None and row.status == ConversationStatus.HANDOFF.value:
            yield BotReply(self.persona.render(self.persona.waiting_text), Decision.WAITING,
                           conversation, confidence=1.0)
            return
        plain = simple(text)
        if self.intents.wants_human(text):
            yield self._handoff_reply(conversation)
            return
        if self.intents.refuses_human(text):
            yield BotReply(self.persona.render(self.persona.stay_text), Decision.ANSWER,
                           conversation, confidence=1.0, meta={"intent": "no-human"})
            return
        if self.intents.asks_identity(plain):
            yield BotReply(self.persona.render(self.persona.identity_text), Decision.ANSWER,
                           conversation, confidence=1.0, meta={"intent": "identity"})
            return
        last = await self.store.last_bot_message(conversation)
        if last is not None and last.decision == Decision.CLARIFY.value:
            by_id = self.index.by_id
            picked = pick(plain, [by_id[i] for i in last.faq_ids if i in by_id])
            if picked is not None:
                score = dict(zip(last.faq_ids, last.scores, strict=False)).get(picked.id, 0.0)
                yield self._answer(conversation, FaqHit(picked, score, picked.question))
                return
            if plain in NEGATIVE:
                yield self._fallback(conversation, 1.0)
                return
        if (last is not None and last.decision == Decision.FALLBACK.value
                and plain in AFFIRMATIVE):
            yield self._handoff_reply(conversation)
            return
        if self.faq_sync is not None:
            await self.faq_sync()
        history = await self.store.history(conversation, limit=self.dialogue.history_turns) \
            if self.dialogue.history_turns else []
        loop = asyncio.get_running_loop()
        found = await loop.run_in_executor(self._executor, self._retrieve, text, history,
                                           turn.vectors)
        hits = found.hits
        top = hits[0].score if hits else 0.0
        turn.meta.update({"retrieval_query": found.query,
                          "retrieved": [{"id": h.entry.id, "score": round(h.score, 4)}
                                        for h in hits]})
        reply: BotReply
        band = self._band(hits).band
        if band is Band.ANSWER:
            reply = self._answer(conversation, hits[0])
        elif band is Band.SUGGEST:
            middle = self.dialogue.middle
            if middle == "generate" and self._generator_factory is None:
                middle = "clarify"
            if middle == "generate":
                generated: BotReply | None = None
                try:
                    async for event in self._generate(conversation, text, hits, history, turn):
                        if isinstance(event, BotReply):
                            generated = event
                        else:
                            yield event
                except (ModelError, GenerationError) as exc:
                    if turn.shown:
                        raise
                    # The customer still gets a useful turn; the cause is stored with it.
                    log.warning("generation failed, offering 'Did you mean': %s", exc)
                    generated = replace(self._clarify(conversation, hits),
                                        meta={"generation_error": str(exc)})
                assert generated is not None
                reply = generated
            elif middle == "clarify":
                reply = self._clarify(conversation, hits)
            else:
                reply = self._fallback(conversation, top)
        else:
            reply = self._fallback(conversation, top)
        yield replace(reply, meta={**turn.meta, **reply.meta})

    async def _guard_input(self, message: UserMessage, turn: _Turn) -> BotReply | str:
        """The input guards, off the event loop: a refusal, or the text the turn goes on with."""
        assert self.safety is not None
        conversation = message.conversation_id
        left = self.safety.cooldown_left(conversation)
        refusal = self.safety.cooldown_refusal(left) if left else None
        if refusal is None:
            loop = asyncio.get_running_loop()
            # The raw text: the normaliser collapses white space itself, after reading wide gaps
            # between spelled-out letters as word breaks ("i g n o r e   y o u r").
            result = await loop.run_in_executor(
                self._executor, self.safety.check_input, message.text, message.user_id,
                conversation, message.channel)
            turn.verdicts_in = result.stored()
            turn.vectors = result.context.vectors
            if result.allowed:
                return self.safety.turn_text(result)
            assert result.blocked is not None
            refusal = self.safety.refusal(conversation, result.blocked)
        return BotReply(refusal.text, refusal.decision, conversation, confidence=1.0,
                        meta=refusal.meta)

    def _retrieve(self, text: str, history: list[Message],
                  vectors: dict[str, Any] | None = None) -> _Retrieved:
        """Search the message; a short follow-up is also searched with the previous question.
        `vectors` may hold the message's embedding already (the input guards made it)."""
        previous = next((m.text for m in reversed(history) if m.role == "user"), None)
        if (previous is None or len(text.split()) > _FOLLOW_UP_MAX_WORDS
                or not FOLLOW_UP.search(simple(text))):
            vector = (vectors or {}).get(text)
            if vector is not None:
                hits = self.index.search_vectors(vector.reshape(1, -1), self.retrieval.top_k,
                                                 [text])[0]
                return _Retrieved(hits, text)
            return _Retrieved(self.index.search(text, self.retrieval.top_k), text)
        combined = f"{previous} {text}"
        known = (vectors or {}).get(text)  # the guards' embedding of the message, if they ran
        top_k = self.retrieval.top_k
        alone = (self.index.search(text, top_k) if known is None else
                 self.index.search_vectors(known.reshape(1, -1), top_k, [text])[0])
        if alone and alone[0].score + _FOLLOW_UP_GAIN > 1.0:
            # Scores are at most 1: nothing joined could win by the gain, so it is not embedded
            # (an FAQ question that merely says "it" costs one embedding, not two).
            return _Retrieved(alone, text)
        joined = self.index.search(combined, top_k)
        if joined and (not alone or joined[0].score >= alone[0].score + _FOLLOW_UP_GAIN):
            return _Retrieved(joined, combined)
        return _Retrieved(alone, text)

    async def _generate(self, conversation: str, text: str, hits: list[FaqHit],
                        history: list[Message], turn: _Turn) -> AsyncIterator[Event]:
        """Write an answer grounded in the top entries; release it sentence by sentence as each
        passes the grounding check; with nothing released, offer 'Did you mean'."""
        loop = asyncio.get_running_loop()
        generator = await loop.run_in_executor(None, lambda: self.generator)
        assert generator is not None
        params = self.generation
        sources = [hits[i] for i in prompt_places(
            [h.score for h in hits], self.retrieval.suggest_threshold, self.dialogue.prompt_floor,
            self.dialogue.prompt_entries)]
        chat: list[ChatMessage] = [
            {"role": "user" if m.role == "user" else "assistant", "content": m.text}
            for m in history]
        prompt = build_prompt(self.persona, [h.entry for h in sources], chat, text,
                              generator.count_tokens,
                              generator.context_tokens - params.max_new_tokens,
                              [h.matched_question for h in sources]
                              if self.dialogue.prompt_phrasings else None)
        used = [h for h in sources if h.entry.id in prompt.entry_ids]
        entries = [h.entry for h in used]
        turn.decision = Decision.GENERATE
        turn.sources = [_source(h) for h in used]
        turn.meta.update({"prompt_tokens": prompt.tokens, "prompt_entries": prompt.entry_ids,
                          "history_messages": prompt.history_messages, "model": generator.name})
        started = time.perf_counter()
        cancel = threading.Event()
        candidates: list[Candidate] = []
        if params.n == 1:
            pieces = generated_pieces(generator, prompt.messages, params, cancel,
                                      lambda: self._decided(turn))
        else:  # n candidates, ranked by grounding; the best is then checked like a stream
            submitted = generator.submit([prompt.messages], params, cancel=cancel)
            self._decided(turn)
            texts = [tidy_reply(t) for t in (await asyncio.wrap_future(submitted))[0]]
            scores = await loop.run_in_executor(
                self._executor, grounding_scores, texts, entries, self.index.embedder, text)
            candidates = sorted((Candidate(t, s) for t, s in zip(texts, scores, strict=True)),
                                key=lambda c: c.score, reverse=True)
            pieces = one_piece(candidates[0].text)

        async def check(sentence: str) -> SentenceCheck:
            return await loop.run_in_executor(self._executor, self._check, sentence, entries,
                                              text, turn)

        verified = VerifiedStream(pieces, check, cancel.set,
                                  per_sentence=self.dialogue.release == "sentence")
        async for piece in verified:
            yield TextEvent(piece)
        outcome = verified.outcome
        meta: dict[str, Any] = {
            "generation_seconds": round(time.perf_counter() - started, 3),
            "generated": outcome.raw,
            "checks": [{"text": c.text, "score": c.score, "supported": c.supported,
                        **({"reason": c.reason} if c.reason else {})} for c in outcome.checks]}
        if outcome.cut_off:
            meta["cut_off"] = outcome.cut_off
        if not candidates:
            candidates = [Candidate(tidy_reply(outcome.raw), min(
                (c.score for c in outcome.checks), default=0.0))]
        if not outcome.released:
            reason = outcome.rejected.reason if outcome.rejected else "no complete sentence"
            meta["rejected"] = reason if reason.startswith("safety") else f"grounding: {reason}"
            yield replace(self._clarify(conversation, hits), candidates=candidates, meta=meta)
            return
        if outcome.rejected is not None:
            meta["held_back"] = outcome.rejected.reason
        released = [c for c in outcome.checks if c.supported]
        confidence = min(c.score for c in released)
        yield BotReply(outcome.released, Decision.GENERATE, conversation,
                       sources=turn.sources, confidence=confidence, candidates=candidates,
                       meta=meta)

    def _check(self, sentence: str, entries: list[FaqEntry], question: str,
               turn: _Turn | None = None) -> SentenceCheck:
        """The output guards, then the grounding check, on one sentence against the FAQ entries
        in the prompt; a blocked sentence counts as unsupported (nothing after it is shown)."""
        if self.safety is not None:
            result = self.safety.check_output(sentence, question)
            if turn is not None:
                turn.verdicts_out.extend(result.stored())
            if result.blocked is not None:
                return SentenceCheck(sentence, 0.0, False,
                                     f"safety: {result.blocked.guard}: {result.blocked.reason}")
        return self._checker.check_sentence(sentence, entries, question,
                                            min_score=self.dialogue.min_grounding)

    def _fallback(self, conversation: str, top: float) -> BotReply:
        return BotReply(self.persona.render(self.persona.fallback_text), Decision.FALLBACK,
                        conversation, confidence=top)

    def _band(self, hits: list[FaqHit]) -> BandDecision:
        """The policy's band for ranked hits (retrieval.bands: the same for eval and bench)."""
        r = self.retrieval
        return decide([h.score for h in hits], r.answer_threshold, r.suggest_threshold,
                      r.max_suggestions, r.answer_margin)

    def _clarify(self, conversation: str, hits: list[FaqHit]) -> BotReply:
        """'Did you mean' with the closest entries above the suggest threshold."""
        offered = [hits[i] for i in suggestions([h.score for h in hits],
                                                self.retrieval.suggest_threshold,
                                                self.retrieval.max_suggestions)]
        lines = [self.persona.render(self.persona.clarify_text)]
        lines += [f"{i}. {h.entry.question}" for i, h in enumerate(offered, start=1)]
        if self.persona.clarify_footer:
            lines.append(self.persona.render(self.persona.clarify_footer))
        return BotReply("\n".join(lines), Decision.CLARIFY, conversation,
                        suggestions=[_source(h) for h in offered], confidence=hits[0].score)

    def _answer(self, conversation: str, hit: FaqHit) -> BotReply:
        text = hit.entry.answer + (f"\nMore: {hit.entry.link}" if hit.entry.link else "")
        return BotReply(text, Decision.ANSWER, conversation, sources=[_source(hit)],
                        confidence=hit.score)

    def _handoff_reply(self, conversation: str) -> BotReply:
        return BotReply(self.persona.render(self.persona.handoff_text), Decision.HANDOFF,
                        conversation, confidence=1.0)


def _source(hit: FaqHit) -> Source:
    return Source(id=hit.entry.id, question=hit.entry.question, score=round(hit.score, 4),
                  link=hit.entry.link or None)
