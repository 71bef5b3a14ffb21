"""The guard pipeline: configured guards in order, the first block wins, every verdict kept."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from bot.safety.base import Embed, Guard, GuardContext, Verdict
from bot.safety.normalize import clean, fold


@dataclass
class PipelineResult:
    """What the pipeline found: every verdict in order, the block (if any), the texts."""

    verdicts: list[Verdict] = field(default_factory=list)
    blocked: Verdict | None = None
    text: str = ""  # the cleaned text (NFKC, no invisible characters): what the turn uses
    redacted: str | None = None  # the text with PII redacted, if the PII guard ran
    context: GuardContext = field(default_factory=GuardContext)

    @property
    def allowed(self) -> bool:
        """True when no guard blocked."""
        return self.blocked is None

    def stored(self) -> list[dict[str, Any]]:
        """The verdicts as stored with the message."""
        return [v.to_dict() for v in self.verdicts]


class GuardPipeline:
    """Runs its guards in order on one text; stops at the first that blocks."""

    def __init__(self, guards: Sequence[Guard]) -> None:
        self.guards = list(guards)

    @property
    def names(self) -> list[str]:
        """The guards' names, in order."""
        return [g.name for g in self.guards]

    def run(self, text: str, context: GuardContext | None = None,
            embed: Embed | None = None) -> PipelineResult:
        """Check `text`; without a normaliser in the pipeline, the folded copy is made here."""
        context = context or GuardContext()
        if embed is not None:
            context.embed = embed
        if "normalize" not in self.names:
            context.text = " ".join(clean(text)[0].split())
            context.folded = fold(text)
        result = PipelineResult(text=context.text or text, context=context)
        current = context.text or text
        for guard in self.guards:
            started = time.perf_counter()
            verdict = guard.check(current, context)
            verdict = replace(verdict, ms=(time.perf_counter() - started) * 1000)
            result.verdicts.append(verdict)
            if guard.name == "normalize" and verdict.redacted_text is not None:
                current = result.text = verdict.redacted_text
            elif verdict.redacted_text is not None:
                result.redacted = verdict.redacted_text
            if not verdict.allowed:
                result.blocked = verdict
                break
        return result
