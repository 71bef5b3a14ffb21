"""PII redaction for training data with presidio-analyzer's pattern recognizers, offline.

Each recognizer is called directly (no AnalyzerEngine, no spaCy model): these recognizers match
by regex or phonenumbers and validate by checksum (Luhn for cards, mod-97 for IBANs), so no NLP
artifacts are needed. Context words only raise scores, and every validated match is redacted
regardless of score. presidio's EmailRecognizer validates domains with tldextract, which would
download the public-suffix list; here it uses the snapshot tldextract ships.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import tldextract
from presidio_analyzer import Pattern
from presidio_analyzer.predefined_recognizers import (
    CreditCardRecognizer,
    EmailRecognizer,
    IbanRecognizer,
    PhoneRecognizer,
)

KINDS = ("EMAIL", "PHONE", "CARD", "IBAN")  # the placeholder is "<KIND>"
PHONE_REGIONS = ("US", "GB", "DE", "FR", "IL", "IN", "CA", "BR", "AU")  # for numbers without +
# presidio's card pattern misses Mastercard's 2-series (2221-2720, issued since 2017); Luhn still
# validates every match.
MASTERCARD_2_SERIES = Pattern(
    "Mastercard 2-series",
    r"\b(?:222[1-9]|22[3-9]\d|2[3-6]\d{2}|27[01]\d|2720)[- ]?\d{4}[- ]?\d{4}[- ]?\d{4}\b", 0.3)
# phonenumbers accepts some short numbers as valid (with region DE, "1695" of a street address);
# a phone number to redact has at least this many digits.
MIN_PHONE_DIGITS = 7
_OFFLINE_TLD = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)
# Cheap pre-checks: a recognizer runs only on text that could hold its kind (most turns hold none).
_DIGITS = re.compile(r"\d")
_MAY_HOLD = {
    "EMAIL": lambda text: "@" in text,
    "PHONE": lambda text: len(_DIGITS.findall(text)) >= MIN_PHONE_DIGITS,
    "CARD": lambda text: len(_DIGITS.findall(text)) >= 12,
    "IBAN": lambda text: re.search(r"[A-Z]{2}\d{2}", text) is not None,
}


class OfflineEmailRecognizer(EmailRecognizer):
    """presidio's email recognizer, checking the domain against the bundled suffix list."""

    def validate_result(self, pattern_text: str) -> bool:
        """A known public suffix makes the address valid."""
        return bool(_OFFLINE_TLD(pattern_text).suffix)


@dataclass(frozen=True)
class Span:
    """One piece of PII found in a text: [start, end) and its kind."""

    start: int
    end: int
    kind: str
    score: float


class Redactor:
    """Finds emails, phone numbers, card numbers and IBANs and replaces each with `<KIND>`."""

    def __init__(self, kinds: Sequence[str] = KINDS,
                 phone_regions: Sequence[str] = PHONE_REGIONS) -> None:
        unknown = set(kinds) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown PII kinds {sorted(unknown)}; known: {', '.join(KINDS)}")
        recognizers: dict[str, tuple[Any, str]] = {
            "EMAIL": (OfflineEmailRecognizer(), "EMAIL_ADDRESS"),
            "PHONE": (PhoneRecognizer(supported_regions=tuple(phone_regions)), "PHONE_NUMBER"),
            "CARD": (CreditCardRecognizer(patterns=[*CreditCardRecognizer.PATTERNS,
                                                     MASTERCARD_2_SERIES]), "CREDIT_CARD"),
            "IBAN": (IbanRecognizer(), "IBAN_CODE"),
        }
        self.recognizers = {kind: recognizers[kind] for kind in kinds}

    def find(self, text: str) -> list[Span]:
        """Non-overlapping PII spans, in text order. Overlapping matches become one span over
        their union (no fragment of a number survives), of the kind of the most certain match
        (score, then length: a Luhn-valid card beats a phone number read inside it)."""
        found = []
        for kind, (recognizer, entity) in self.recognizers.items():
            if not _MAY_HOLD[kind](text):
                continue
            for result in recognizer.analyze(text, [entity], nlp_artifacts=None):
                piece = text[result.start:result.end]
                if result.score <= 0 or not piece or (
                        kind == "PHONE" and len(_DIGITS.findall(piece)) < MIN_PHONE_DIGITS):
                    continue
                found.append(Span(result.start, result.end, kind, result.score))
        found.sort(key=lambda s: (s.start, -s.end))
        spans: list[Span] = []
        for span in found:
            if spans and span.start < spans[-1].end:
                last = spans[-1]
                best = max(last, span, key=lambda s: (s.score, s.end - s.start))
                spans[-1] = Span(last.start, max(last.end, span.end), best.kind, best.score)
            else:
                spans.append(span)
        return spans

    def redact(self, text: str) -> tuple[str, Counter[str]]:
        """The text with each PII span replaced by `<KIND>`, and the count of each kind."""
        counts: Counter[str] = Counter()
        pieces, pos = [], 0
        for span in self.find(text):
            pieces += [text[pos:span.start], f"<{span.kind}>"]
            pos = span.end
            counts[span.kind] += 1
        pieces.append(text[pos:])
        return "".join(pieces), counts
