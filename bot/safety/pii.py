"""PII: presidio-analyzer's pattern recognizers on a blank spaCy pipeline (offline, no model
download), plus what they lack: grouped card numbers that fail Luhn, secrets, "my name is",
street addresses. `Redactor` finds and redacts; `PiiGuard` redacts input (never blocks);
`PiiLeakGuard` blocks generated text with contact or card data the FAQ and customer lack.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from bot.safety.base import GuardContext, Verdict

ENTITIES = ("EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "US_SSN", "IP_ADDRESS",
            "UK_NINO", "PERSON", "ADDRESS", "SECRET")
_OWN = frozenset({"PERSON", "ADDRESS", "SECRET"})  # found by the patterns below only
LEAK_ENTITIES = frozenset({"EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE"})

# (label, pattern, score): what presidio's pattern recognizers miss.
_EXTRA: list[tuple[str, re.Pattern[str], float]] = [(label, re.compile(p, flags), s) for
                                                     label, p, flags, s in [
    # 13-19 digits in groups (a mistyped card still is one); presidio requires a valid Luhn sum.
    ("CREDIT_CARD", r"(?<![\d-])(?:\d{4}[ -]){2,3}\d{4}(?:[ -]?\d{1,3})?(?![\d-])|"
     r"(?<!\d)3[47]\d{2}[ -]\d{6}[ -]\d{5}(?!\d)|(?<![\d-])\d{15,16}(?![\d-])", 0, 0.6),
    ("PHONE_NUMBER", r"(?<![\w+])(?:\+|00)\d{1,3}[ .\-]?(?:\(\d{1,4}\)[ .\-]?)?\d{2,4}"
     r"(?:[ .\-]?\d{2,4}){1,3}(?!\d)|(?<!\w)\(\d{3}\)\s?\d{3}[ .\-]\d{4}(?!\d)|"
     r"(?<![\w-])\d{3}[.\-]\d{3}[.\-]\d{4}(?!\w|-\d)|(?<!\w)0\d{3,4}\s\d{6,7}(?!\d)|"
     r"(?<!\w)0\d{2,4}[ \-]\d{3,4}[ \-]\d{3,4}(?!\d)", 0, 0.5),
    ("EMAIL_ADDRESS", r"(?<![\w.+-])[\w.+-]+@[\w-]+(?:\.[\w-]+)+", 0, 0.5),  # any domain
    ("SECRET", r"\b(?:password|passcode|passwd|pwd|pin|cvv|cvc|security code|api[ _-]?key|"
     r"secret|token)\b\s*(?:is|was|:|=)\s*[\"']?([^\s\"',;]{3,})", re.IGNORECASE, 0.7),
    ("SECRET", r"\b(?:sk|pk|rk)[-_](?:live|test)?[-_]?[A-Za-z0-9]{16,}\b|\bAKIA[0-9A-Z]{16}\b|"
     r"\bgh[pousr]_[A-Za-z0-9]{30,}\b|\bxox[abpr]-[A-Za-z0-9-]{10,}\b|"
     r"\beyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{5,}", 0, 0.9),
    ("PERSON", r"\b(?:my name is|my name's|name:|i am called|this is|signed,?|regards,?|"
     r"cardholder:?|account holder:?)\s+((?:[A-Z][a-z'\-]+|[A-Z]\.)(?:\s+(?:[A-Z][a-z'\-]+|"
     r"[A-Z]\.)){0,3})", 0, 0.6),
    ("ADDRESS", r"\b\d{1,5}[A-Za-z]?\s+(?:[A-Z][a-z]+\s+){1,4}(?:Street|St|Avenue|Ave|Road|Rd|"
     r"Lane|Ln|Drive|Dr|Boulevard|Blvd|Court|Ct|Place|Pl|Way|Terrace|Close|Square|Sq|Highway|"
     r"Hwy|Parkway|Pkwy|Crescent|Gardens|Row|Circle|Cir|Trail|Alley|Plaza)\b\.?"
     r"(?:,?\s+(?:Apt\.?|Suite|Unit|Flat|#)\s*\w+)?", 0, 0.6),
    ("US_SSN", r"(?<![\d-])\d{3}-\d{2}-\d{4}(?![\d-])", 0, 0.5),
]]


@dataclass(frozen=True)
class Span:
    """One piece of PII found in a text."""

    start: int
    end: int
    label: str
    score: float


class Redactor:
    """Finds PII with presidio and the extra patterns; replaces it with <LABEL>."""

    def __init__(self, entities: Iterable[str] = ENTITIES, regions: Iterable[str] = ("US",),
                 min_score: float = 0.3) -> None:
        self.entities = [e for e in entities if e in ENTITIES]
        self.min_score = min_score
        self._presidio_entities = [e for e in self.entities if e not in _OWN]
        self._engine = _presidio(self._presidio_entities, tuple(regions))

    def find(self, text: str) -> list[Span]:
        """Non-overlapping spans, longest and surest first where they overlap."""
        found: list[Span] = []
        if self._engine is not None and text:
            for result in self._engine.analyze(text, language="en",
                                               entities=self._presidio_entities,
                                               score_threshold=self.min_score):
                found.append(Span(result.start, result.end, result.entity_type, result.score))
        for label, pattern, score in _EXTRA:
            if label not in self.entities:
                continue
            for match in pattern.finditer(text):
                group = 1 if match.lastindex else 0
                found.append(Span(match.start(group), match.end(group), label, score))
        return _without_overlaps(found)

    def redact(self, text: str, keep: frozenset[str] = frozenset()) -> tuple[str, list[Span]]:
        """The text with each span replaced by <LABEL> (values in `keep` stay), and the spans."""
        spans = [s for s in self.find(text) if value_key(text[s.start:s.end], s.label)
                 not in keep]
        pieces, last = [], 0
        for span in spans:
            pieces.append(text[last:span.start])
            pieces.append(f"<{span.label}>")
            last = span.end
        pieces.append(text[last:])
        return "".join(pieces), spans

    def values(self, texts: Iterable[str]) -> frozenset[str]:
        """The comparable keys of every PII value in the texts (e.g. the FAQ's own contacts)."""
        return frozenset(value_key(t[s.start:s.end], s.label) for t in texts
                         for s in self.find(t))

    def redact_data(self, data: Any, keep: frozenset[str] = frozenset()) -> Any:
        """Every string inside lists and dicts redacted (dict keys stay)."""
        if isinstance(data, str):
            return self.redact(data, keep)[0]
        if isinstance(data, list | tuple):
            return [self.redact_data(v, keep) for v in data]
        if isinstance(data, dict):
            return {k: self.redact_data(v, keep) for k, v in data.items()}
        return data


def value_key(value: str, label: str) -> str:
    """A value in a form that compares across spellings: digits only for numbers."""
    if label in ("PHONE_NUMBER", "CREDIT_CARD", "US_SSN"):
        digits = re.sub(r"\D", "", value)
        return digits[-9:] if label == "PHONE_NUMBER" else digits  # country codes vary
    return re.sub(r"\s", "", value).lower()


def _without_overlaps(spans: list[Span]) -> list[Span]:
    chosen: list[Span] = []
    for span in sorted(spans, key=lambda s: (-(s.end - s.start), -s.score)):
        if all(span.end <= c.start or span.start >= c.end for c in chosen):
            chosen.append(span)
    return sorted(chosen, key=lambda s: s.start)


def _presidio(entities: list[str], regions: tuple[str, ...]) -> Any:
    """An AnalyzerEngine with the pattern recognizers only, on a blank spaCy pipeline."""
    from bot.safety.presidio_engine import analyzer

    return analyzer(entities, regions) if entities else None


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
