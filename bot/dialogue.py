"""DialogueManager: turns a UserMessage into a BotReply by policy over FAQ retrieval."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from bot.errors import GenerationError, ModelError
from bot.generation.base import ChatMessage, Generator
from bot.generation.prompt import build_prompt
from bot.generation.ranking import grounding_scores
from bot.generation.text import tidy_reply
from bot.settings import DialogueSettings, GenerationSettings, PersonaSettings, RetrievalSettings
from bot.storage import ConversationStore, Message
from bot.types import BotReply, Candidate, Decision, Source, UserMessage
from retrieval.corpus import FaqEntry
from retrieval.index import FaqHit, FaqIndex

TokenSink = Callable[[str], None]  # receives generated text pieces, from a worker thread

_ORDINALS = {"one": 1, "first": 1, "1st": 1, "two": 2, "second": 2, "2nd": 2,
             "three": 3, "third": 3, "3rd": 3, "four": 4, "fourth": 4, "4th": 4,
             "five": 5, "fifth": 5, "5th": 5}
_PICK = re.compile(r"^(?:the\s+)?(?:number\s+|no\.?\s*|#\s*)?(\w+)(?:\s+one)?(?:\s+please)?$")
_NEGATIVE = {"no", "nope", "none", "neither", "none of these", "none of them", "none of those",
             "no thanks", "no thank you", "something else"}
_AFFIRMATIVE = {"yes", "y", "yes please", "yeah", "yep", "sure", "ok", "okay", "please",
                "please do", "yes connect me"}
_HANDOFF_MAX_WORDS = 8
# A short message that starts like a follow-up or points back ("and how long does that take?")
# is also searched together with the previous question; that wins if it scores clearly higher.
_FOLLOW_UP_MAX_WORDS = 10
_FOLLOW_UP = re.compile(r"^(?:and|also|but|so|or|what about|how about|then)\b|"
                        r"\b(?:it|that|this|those|these|them|they|one|there)\b")
_FOLLOW_UP_GAIN = 0.05


def normalise(text: str) -> str:
    """Collapse whitespace and strip the ends."""
    return " ".join(text.split())


def _simple(text: str) -> str:
    """Lower-case words only, for matching short replies like 'the second one' or 'yes'."""
    return " ".join(re.sub(r"[^\w\s#]", " ", text.casefold()).split())


@dataclass(frozen=True)
class _Retrieved:
    hits: list[FaqHit]
    query: str


class DialogueManager:
    """Decides per message: FAQ answer, generated grounded answer, 'Did you mean', fallback with
    a human offer, or handoff. The generator is loaded on first use, never before."""

    def __init__(self, index: FaqIndex, store: ConversationStore, persona: PersonaSettings,
                 retrieval: RetrievalSettings, dialogue: DialogueSettings,
                 generation: GenerationSettings | None = None,
                 generator: Callable[[], Generator] | None = None) -> None:
        self.index = index
        self.store = store
        self.persona = persona
        self.retrieval = retrieval
        self.dialogue = dialogue
        self.generation = generation or GenerationSettings()
        self._generator_factory = generator
        self._generator: Generator | None = None
        self._generator_lock = threading.Lock()
        self._by_id = {entry.id: entry for entry in index.entries}
        keywords = sorted((_simple(k) for k in dialogue.handoff_keywords), key=len, reverse=True)
        self._handoff = re.compile(r"\b(?:" + "|".join(map(re.escape, keywords)) + r")\b") \
            if keywords else None

    @property
    def generator(self) -> Generator | None:
        """The generator, loading it now if it is configured and not loaded yet."""
        if self._generator is None and self._generator_factory is not None:
            with self._generator_lock:
                if self._generator is None:
                    self._generator = self._generator_factory()
        return self._generator

    @property
    def generator_loaded(self) -> bool:
        """Whether the model has been loaded (it loads when a turn first needs it)."""
        return self._generator is not None

    async def handle(self, message: UserMessage, on_token: TokenSink | None = None) -> BotReply:
        """Decide, reply, and store the turn; latency covers deciding, not storing.

        With `on_token`, a generated answer is streamed piece by piece as it is written; the
        returned reply is authoritative (a streamed answer that fails the grounding check is
        replaced by 'Did you mean').
        """
        started = time.perf_counter()
        reply = await self._decide(message, on_token)
        reply = replace(reply, latency_ms=round((time.perf_counter() - started) * 1000, 2))
        await self.store.record_turn(message, reply)
        return reply

    async def _decide(self, message: UserMessage, on_token: TokenSink | None) -> BotReply:
        text = normalise(message.text)
        conversation = message.conversation_id
        if not text:
            return BotReply(self.persona.render(self.persona.empty_text), Decision.INVALID,
                            conversation, confidence=1.0)
        if len(text) > self.dialogue.max_input_chars:
            return BotReply(
                self.persona.render(self.persona.too_long_text,
                                    max_chars=self.dialogue.max_input_chars),
                Decision.INVALID, conversation, confidence=1.0)
        simple = _simple(text)
        if self._wants_human(simple):
            return self._handoff_reply(conversation)
        last = await self.store.last_bot_message(conversation)
        if last is not None and last.decision == Decision.CLARIFY.value:
            picked = self._pick(simple, last.faq_ids)
            if picked is not None:
                score = dict(zip(last.faq_ids, last.scores, strict=False)).get(picked.id, 0.0)
                return self._answer(conversation, FaqHit(picked, score, picked.question))
            if simple in _NEGATIVE:
                return self._fallback(conversation, 1.0)
        if (last is not None and last.decision == Decision.FALLBACK.value
                and simple in _AFFIRMATIVE):
            return self._handoff_reply(conversation)
        history = await self.store.history(conversation, limit=self.dialogue.history_turns) \
            if self.dialogue.history_turns else []
        found = await asyncio.to_thread(self._retrieve, text, history)
        hits = found.hits
        top = hits[0].score if hits else 0.0
        meta = {"retrieval_query": found.query,
                "retrieved": [{"id": h.entry.id, "score": round(h.score, 4)} for h in hits]}
        if hits and top >= self.retrieval.answer_threshold:
            reply = self._answer(conversation, hits[0])
        elif hits and top >= self.retrieval.suggest_threshold:
            middle = self.dialogue.middle
            if middle == "generate" and self._generator_factory is None:
                middle = "clarify"
            if middle == "generate":
                try:
                    reply = await asyncio.to_thread(self._generate, conversation, text, hits,
                                                    history, on_token)
                except (ModelError, GenerationError) as exc:
                    # The customer still gets a useful turn; the cause is stored with it.
                    reply = replace(self._clarify(conversation, hits),
                                    meta={"generation_error": str(exc)})
            elif middle == "clarify":
                reply = self._clarify(conversation, hits)
            else:
                reply = self._fallback(conversation, top)
        else:
            reply = self._fallback(conversation, top)
        return replace(reply, meta={**meta, **reply.meta})

    def _retrieve(self, text: str, history: list[Message]) -> _Retrieved:
        """Search the message; a short follow-up is also searched with the previous question."""
        previous = next((m.text for m in reversed(history) if m.role == "user"), None)
        if (previous is None or len(text.split()) > _FOLLOW_UP_MAX_WORDS
                or not _FOLLOW_UP.search(_simple(text))):
            return _Retrieved(self.index.search(text, self.retrieval.top_k), text)
        combined = f"{previous} {text}"
        alone, joined = self.index.search_many([text, combined], self.retrieval.top_k)
        if joined and (not alone or joined[0].score >= alone[0].score + _FOLLOW_UP_GAIN):
            return _Retrieved(joined, combined)
        return _Retrieved(alone, text)

    def _generate(self, conversation: str, text: str, hits: list[FaqHit],
                  history: list[Message], on_token: TokenSink | None) -> BotReply:
        """Write an answer grounded in the top entries; rank candidates; refuse ungrounded ones."""
        generator = self.generator
        assert generator is not None
        params = self.generation
        sources = [h for h in hits if h.score >= self.retrieval.suggest_threshold]
        sources = sources[:self.dialogue.prompt_entries]
        chat: list[ChatMessage] = [
            {"role": "user" if m.role == "user" else "assistant", "content": m.text}
            for m in history]
        prompt = build_prompt(self.persona, [h.entry for h in sources], chat, text,
                              generator.count_tokens,
                              generator.context_tokens - params.max_new_tokens)
        started = time.perf_counter()
        if on_token is not None and params.n == 1:
            pieces = []
            for piece in generator.stream(prompt.messages, params):
                pieces.append(piece)
                on_token(piece)
            texts = ["".join(pieces)]
        else:
            texts = generator.generate([prompt.messages], params)[0]
        texts = [tidy_reply(t) for t in texts]
        seconds = time.perf_counter() - started
        used = [h for h in sources if h.entry.id in prompt.entry_ids]
        scores = grounding_scores(texts, [h.entry for h in used], self.index.embedder)
        candidates = sorted((Candidate(t, s) for t, s in zip(texts, scores, strict=True)),
                            key=lambda c: c.score, reverse=True)
        best = candidates[0]
        meta = {"prompt_tokens": prompt.tokens, "prompt_entries": prompt.entry_ids,
                "history_messages": prompt.history_messages,
                "generation_seconds": round(seconds, 3), "model": generator.name}
        if best.score < self.dialogue.min_grounding:
            meta["rejected"] = f"grounding {best.score:.2f} < {self.dialogue.min_grounding}"
            reply = self._clarify(conversation, hits)
            return replace(reply, candidates=candidates, meta=meta)
        return BotReply(best.text, Decision.GENERATE, conversation,
                        sources=[_source(h) for h in used], confidence=best.score,
                        candidates=candidates, meta=meta)

    def _fallback(self, conversation: str, top: float) -> BotReply:
        return BotReply(self.persona.render(self.persona.fallback_text), Decision.FALLBACK,
                        conversation, confidence=top)

    def _clarify(self, conversation: str, hits: list[FaqHit]) -> BotReply:
        """'Did you mean' with the closest entries above the suggest threshold."""
        offered = [h for h in hits if h.score >= self.retrieval.suggest_threshold]
        offered = offered[:self.retrieval.max_suggestions]
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

    def _wants_human(self, simple: str) -> bool:
        """A short message that names a human (agent, operator, ...) asks for a handoff."""
        if self._handoff is None or len(simple.split()) > _HANDOFF_MAX_WORDS:
            return False
        return self._handoff.search(simple) is not None

    def _pick(self, simple: str, offered_ids: list[str]) -> FaqEntry | None:
        """The offered entry the user chose by number, ordinal or by repeating its question."""
        offered = [self._by_id[i] for i in offered_ids if i in self._by_id]
        match = _PICK.match(simple)
        if match:
            token = match.group(1)
            number = int(token) if token.isdigit() else _ORDINALS.get(token)
            if number is not None and 1 <= number <= len(offered):
                return offered[number - 1]
        for entry in offered:
            if any(_simple(q) == simple for q in entry.questions):
                return entry
        return None


def _source(hit: FaqHit) -> Source:
    return Source(id=hit.entry.id, question=hit.entry.question, score=round(hit.score, 4))
