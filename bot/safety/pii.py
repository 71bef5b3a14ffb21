"""The PII guards: `PiiGuard` redacts input (never blocks); `PiiLeakGuard` blocks generated text
with contact or card data the FAQ and customer lack. The redactor itself is bot/shared/pii.py,
the one every stored, exported and training text goes through.
"""

from __future__ import annotations

from collections.abc import Iterator

from bot.safety.base import GuardContext, Verdict
from bot.shared.pii import ENTITIES, Redactor, Span, value_key

__all__ = ["ENTITIES", "LEAK_ENTITIES", "PiiGuard", "PiiLeakGuard", "Redactor", "Span",
           "spans_in", "value_key"]
LEAK_ENTITIES = frozenset({"EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE"})


def spans_in(spans: list[Span], labels: frozenset[str]) -> Iterator[Span]:
    """The spans whose label is one of `labels`."""
    return (s for s in spans if s.label in labels)


class PiiGuard:
    """Never blocks: the verdict carries the redacted text and the labels found."""

    name = "pii"

    def __init__(self, redactor: Redactor) -> None:
        self.redactor = redactor

    def check(self, text: str, context: GuardContext) -> Verdict:
        """Redact; the score is 1 when anything was found."""
        redacted, spans = self.redactor.redact(text)
        labels = sorted({s.label for s in spans})
        return Verdict(self.name, True, ", ".join(labels), 1.0 if spans else 0.0,
                       redacted_text=redacted, category="pii" if spans else "")


class PiiLeakGuard:
    """Blocks generated text with an email, phone, card or IBAN found neither in the FAQ nor
    in the customer's own message (`context.allowed_values`)."""

    name = "pii_leak"

    def __init__(self, redactor: Redactor) -> None:
        self.redactor = redactor

    def check(self, text: str, context: GuardContext) -> Verdict:
        """Blocked on the first value not allowed."""
        for span in spans_in(self.redactor.find(text), LEAK_ENTITIES):
            if value_key(text[span.start:span.end], span.label) not in context.allowed_values:
                return Verdict(self.name, False, f"{span.label} not in the FAQ or the message",
                               span.score, category="pii_leak")
        return Verdict(self.name, True)
