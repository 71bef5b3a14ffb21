"""The bot's replies that are not generated: FAQ answer, 'Did you mean', fallback, handoff."""

from __future__ import annotations

from bot.settings import PersonaSettings, RetrievalSettings
from bot.types import BotReply, Decision, Source
from retrieval.bands import BandDecision, decide, suggestions
from retrieval.index import FaqHit


def source(hit: FaqHit) -> Source:
    """A hit as the reply's source."""
    return Source(id=hit.entry.id, question=hit.entry.question, score=round(hit.score, 4),
                  link=hit.entry.link or None)


def band(retrieval: RetrievalSettings, hits: list[FaqHit]) -> BandDecision:
    """The policy's band for ranked hits (retrieval.bands: the same for eval and bench)."""
    r = retrieval
    return decide([h.score for h in hits], r.answer_threshold, r.suggest_threshold,
                  r.max_suggestions, r.answer_margin)


def answer(conversation: str, hit: FaqHit) -> BotReply:
    """The FAQ entry's answer, with its link."""
    text = hit.entry.answer + (f"\nMore: {hit.entry.link}" if hit.entry.link else "")
    return BotReply(text, Decision.ANSWER, conversation, sources=[source(hit)],
                    confidence=hit.score)


def clarify(persona: PersonaSettings, retrieval: RetrievalSettings, conversation: str,
            hits: list[FaqHit]) -> BotReply:
    """'Did you mean' with the closest entries above the suggest threshold."""
    offered = [hits[i] for i in suggestions([h.score for h in hits],
                                            retrieval.suggest_threshold,
                                            retrieval.max_suggestions)]
    lines = [persona.render(persona.clarify_text)]
    lines += [f"{i}. {h.entry.question}" for i, h in enumerate(offered, start=1)]
    if persona.clarify_footer:
        lines.append(persona.render(persona.clarify_footer))
    return BotReply("\n".join(lines), Decision.CLARIFY, conversation,
                    suggestions=[source(h) for h in offered], confidence=hits[0].score)


def fallback(persona: PersonaSettings, conversation: str, top: float) -> BotReply:
    """Nothing matches: say so and offer a human."""
    return BotReply(persona.render(persona.fallback_text), Decision.FALLBACK, conversation,
                    confidence=top)


def handoff(persona: PersonaSettings, conversation: str) -> BotReply:
    """The customer goes to a human."""
    return BotReply(persona.render(persona.handoff_text), Decision.HANDOFF, conversation,
                    confidence=1.0)
