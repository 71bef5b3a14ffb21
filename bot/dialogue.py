"""DialogueManager: turns a UserMessage into a BotReply by policy over FAQ retrieval."""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import replace

from bot.settings import DialogueSettings, PersonaSettings, RetrievalSettings
from bot.storage import ConversationStore
from bot.types import BotReply, Decision, Source, UserMessage
from retrieval.corpus import FaqEntry
from retrieval.index import FaqHit, FaqIndex

_ORDINALS = {"one": 1, "first": 1, "1st": 1, "two": 2, "second": 2, "2nd": 2,
             "three": 3, "third": 3, "3rd": 3, "four": 4, "fourth": 4, "4th": 4,
             "five": 5, "fifth": 5, "5th": 5}
_PICK = re.compile(r"^(?:the\s+)?(?:number\s+|no\.?\s*|#\s*)?(\w+)(?:\s+one)?(?:\s+please)?$")
_NEGATIVE = {"no", "nope", "none", "neither", "none of these", "none of them", "none of those",
             "no thanks", "no thank you", "something else"}
_AFFIRMATIVE = {"yes", "y", "yes please", "yeah", "yep", "sure", "ok", "okay", "please",
                "please do", "yes connect me"}
_HANDOFF_MAX_WORDS = 8


def normalise(text: str) -> str:
    """Collapse whitespace and strip the ends."""
    return " ".join(text.split())


def _simple(text: str) -> str:
    """Lower-case words only, for matching short replies like 'the second one' or 'yes'."""
    return " ".join(re.sub(r"[^\w\s#.]", " ", text.casefold()).replace(".", " ").split())


class DialogueManager:
    """Decides per message: FAQ answer, 'Did you mean', fallback with a human offer, or handoff."""

    def __init__(self, index: FaqIndex, store: ConversationStore, persona: PersonaSettings,
                 retrieval: RetrievalSettings, dialogue: DialogueSettings) -> None:
        self.index = index
        self.store = store
        self.persona = persona
        self.retrieval = retrieval
        self.dialogue = dialogue
        self._by_id = {entry.id: entry for entry in index.entries}
        keywords = sorted((_simple(k) for k in dialogue.handoff_keywords), key=len, reverse=True)
        self._handoff = re.compile(r"\b(?:" + "|".join(map(re.escape, keywords)) + r")\b") \
            if keywords else None

    async def handle(self, message: UserMessage) -> BotReply:
        """Decide, reply, and store the turn; latency covers deciding, not storing."""
        started = time.perf_counter()
        reply = await self._decide(message)
        reply = replace(reply, latency_ms=round((time.perf_counter() - started) * 1000, 2))
        await self.store.record_turn(message, reply)
        return reply

    async def _decide(self, message: UserMessage) -> BotReply:
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
                return BotReply(self.persona.render(self.persona.fallback_text),
                                Decision.FALLBACK, conversation, confidence=1.0)
        if (last is not None and last.decision == Decision.FALLBACK.value
                and simple in _AFFIRMATIVE):
            return self._handoff_reply(conversation)
        hits = await asyncio.to_thread(self.index.search, text, self.retrieval.top_k)
        return self._policy(conversation, hits)

    def _policy(self, conversation: str, hits: list[FaqHit]) -> BotReply:
        """Confident match: answer; middling: 'Did you mean'; otherwise fall back."""
        top = hits[0].score if hits else 0.0
        if hits and top >= self.retrieval.answer_threshold:
            return self._answer(conversation, hits[0])
        if hits and self.dialogue.clarify and top >= self.retrieval.suggest_threshold:
            offered = [h for h in hits if h.score >= self.retrieval.suggest_threshold]
            offered = offered[:self.retrieval.max_suggestions]
            lines = [self.persona.render(self.persona.clarify_text)]
            lines += [f"{i}. {h.entry.question}" for i, h in enumerate(offered, start=1)]
            if self.persona.clarify_footer:
                lines.append(self.persona.render(self.persona.clarify_footer))
            return BotReply("\n".join(lines), Decision.CLARIFY, conversation,
                            suggestions=[_source(h) for h in offered], confidence=top)
        return BotReply(self.persona.render(self.persona.fallback_text), Decision.FALLBACK,
                        conversation, suggestions=[], confidence=top)

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
