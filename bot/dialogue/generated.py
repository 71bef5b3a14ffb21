"""The generated band: a model answer grounded in the top FAQ entries, released sentence by
sentence as each passes the output guards and the grounding check."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import TYPE_CHECKING

from bot.dialogue import replies
from bot.dialogue.turn import Event, Turn
from bot.generation.base import ChatMessage
from bot.generation.grounding import SentenceCheck
from bot.generation.prompt import build_prompt
from bot.generation.ranking import grounding_scores
from bot.generation.text import tidy_reply
from bot.generation.verified import Outcome, VerifiedStream, generated_pieces, one_piece
from bot.shared.prompt import prompt_places
from bot.storage import Message
from bot.types import BotReply, Candidate, Decision, ReplyMeta, SentenceCheckRecord, TextEvent
from retrieval.corpus import FaqEntry
from retrieval.index import FaqHit

if TYPE_CHECKING:
    from bot.dialogue.manager import DialogueManager


async def generate(dm: DialogueManager, conversation: str, text: str, hits: list[FaqHit],
                   history: list[Message], turn: Turn) -> AsyncIterator[Event]:
    """Write an answer grounded in the top entries; release it sentence by sentence as each
    passes the grounding check; with nothing released, offer 'Did you mean'."""
    loop = asyncio.get_running_loop()
    generator = await loop.run_in_executor(None, lambda: dm.generator)
    assert generator is not None
    params = dm.generation
    sources = [hits[i] for i in prompt_places(
        [h.score for h in hits], dm.retrieval.suggest_threshold, dm.dialogue.prompt_floor,
        dm.dialogue.prompt_entries)]
    chat: list[ChatMessage] = [
        {"role": "user" if m.role == "user" else "assistant", "content": m.text}
        for m in history]
    prompt = build_prompt(dm.persona, [h.entry for h in sources], chat, text,
                          generator.count_tokens,
                          generator.context_tokens - params.max_new_tokens,
                          [h.matched_question for h in sources]
                          if dm.dialogue.prompt_phrasings else None)
    used = [h for h in sources if h.entry.id in prompt.entry_ids]
    entries = [h.entry for h in used]
    turn.decision = Decision.GENERATE
    turn.sources = [replies.source(h) for h in used]
    turn.meta.update({"prompt_tokens": prompt.tokens, "prompt_entries": prompt.entry_ids,
                      "history_messages": prompt.history_messages, "model": generator.name})
    started = time.perf_counter()
    cancel = threading.Event()
    candidates: list[Candidate] = []
    if params.n == 1:
        pieces = generated_pieces(generator, prompt.messages, params, cancel,
                                  lambda: dm.decided(turn))
    else:  # n candidates, ranked by grounding; the best is then checked like a stream
        submitted = generator.submit([prompt.messages], params, cancel=cancel)
        dm.decided(turn)
        texts = [tidy_reply(t) for t in (await asyncio.wrap_future(submitted))[0]]
        scores = await loop.run_in_executor(
            dm.executor, grounding_scores, texts, entries, dm.index.embedder, text)
        candidates = sorted((Candidate(t, s) for t, s in zip(texts, scores, strict=True)),
                            key=lambda c: c.score, reverse=True)
        pieces = one_piece(candidates[0].text)

    async def checked(sentence: str) -> SentenceCheck:
        return await loop.run_in_executor(dm.executor, check, dm, sentence, entries, text, turn)

    verified = VerifiedStream(pieces, checked, cancel.set,
                              per_sentence=dm.dialogue.release == "sentence")
    async for piece in verified:
        yield TextEvent(piece)
    outcome = verified.outcome
    meta = _generation_meta(outcome, started)
    if not candidates:
        candidates = [Candidate(tidy_reply(outcome.raw), min(
            (c.score for c in outcome.checks), default=0.0))]
    if not outcome.released:
        reason = outcome.rejected.reason if outcome.rejected else "no complete sentence"
        meta["rejected"] = reason if reason.startswith("safety") else f"grounding: {reason}"
        yield replace(replies.clarify(dm.persona, dm.retrieval, conversation, hits,
                                      dm.index.calibration),
                      candidates=candidates, meta=meta)
        return
    if outcome.rejected is not None:
        meta["held_back"] = outcome.rejected.reason
    released = [c for c in outcome.checks if c.supported]
    confidence = min(c.score for c in released)
    yield BotReply(outcome.released, Decision.GENERATE, conversation,
                   sources=turn.sources, confidence=confidence, candidates=candidates,
                   meta=meta)


def _generation_meta(outcome: Outcome, started: float) -> ReplyMeta:
    """What the reply records of a generation: its time, raw text and sentence checks."""
    meta: ReplyMeta = {
        "generation_seconds": round(time.perf_counter() - started, 3),
        "generated": outcome.raw,
        "checks": [_check_record(c) for c in outcome.checks]}
    if outcome.cut_off:
        meta["cut_off"] = outcome.cut_off
    return meta


def _check_record(check: SentenceCheck) -> SentenceCheckRecord:
    """One sentence's verdict as the reply's meta records it."""
    record: SentenceCheckRecord = {"text": check.text, "score": check.score,
                                   "supported": check.supported}
    if check.reason:
        record["reason"] = check.reason
    return record


def check(dm: DialogueManager, sentence: str, entries: list[FaqEntry], question: str,
          turn: Turn | None = None) -> SentenceCheck:
    """The output guards, then the grounding check, on one sentence against the FAQ entries
    in the prompt; a blocked sentence counts as unsupported (nothing after it is shown)."""
    if dm.safety is not None:
        result = dm.safety.check_output(sentence, question)
        if turn is not None:
            turn.verdicts_out.extend(result.stored())
        if result.blocked is not None:
            return SentenceCheck(sentence, 0.0, False,
                                 f"safety: {result.blocked.guard}: {result.blocked.reason}")
    return dm.checker.check_sentence(sentence, entries, question,
                                     min_score=dm.dialogue.min_grounding)
