"""The bot's replies that are not generated: FAQ answer, 'Did you mean', fallback, handoff."""

from __future__ import annotations

from bot.settings import PersonaSettings, RetrievalSettings
from bot.types import BotReply, Decision, Source
from retrieval.bands import BandDecision, decide, suggestions
from retrieval.calibration import Calibration, Effective, effective
from retrieval.index import FaqHit


def source(hit: FaqHit) -> Source:
    """A hit as the reply's source."""
    return Source(id=hit.entry.id, question=hit.entry.question, score=round(hit.score, 4),
                  link=hit.entry.link or None)


def thresholds(retrieval: RetrievalSettings, calibration: Calibration | None) -> Effective:
    """The thresholds in use: those set explicitly in settings (file or environment), else the
    index's calibrated ones, else the defaults."""
    r = retrieval
    return effective(r.answer_threshold, r.answer_margin, r.suggest_threshold,
                     r.model_fields_set, calibration)


def band(retrieval: RetrievalSettings, hits: list[FaqHit],
         calibration: Calibration | None = None) -> BandDecision:
    """The policy's band for ranked hits (retrieval.bands: the same for eval and bench), with
    the effective thresholds (`thresholds`)."""
    t = thresholds(retrieval, calibration)
    return decide([h.score for h in hits], t.answer_threshold, t.suggest_threshold,
                  retrieval.max_suggestions, t.answer_margin)


def answer(conversation: str, hit: FaqHit) -> BotReply:
    """The FAQ entry's answer, with its link."""
    text = hit.entry.answer + (f"\nMore: {hit.entry.link}" if hit.entry.link else "")
    return BotReply(text, Decision.ANSWER, conversation, sources=[source(hit)],
                    confidence=hit.score)


def clarify(persona: PersonaSettings, retrieval: RetrievalSettings, conversation: str,
            hits: list[FaqHit], calibration: Calibration | None = None) -> BotReply:
    """'Did you mean' with the closest entries above the suggest threshold."""
    suggest = thresholds(retrieval, calibration).suggest_threshold
    offered = [hits[i] for i in suggestions([h.score for h in hits], suggest,
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
