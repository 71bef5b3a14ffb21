"""The one PII redactor: stored conversations, exports and training data all go through it.

presidio-analyzer's pattern recognizers on a blank spaCy pipeline (offline, no model download;
bot/shared/presidio_engine.py), plus what they lack: grouped card numbers that fail Luhn,
secrets, "my name is", street addresses. Phone numbers need a phone format (+44 20 ...,
(555) 123-4567, 020 7946 0958) or phone words before a bare digit run ("call 2125550134");
digits after "order", "invoice", "tracking" and the like are identifiers, not phones, and
patterns of identifiers a company keeps (`keep_patterns`) are never redacted.

It lives in bot/shared/ because training uses it too, and training imports only bot.shared of
bot/ (docs/architecture.md); bot/safety/pii.py adds the guards. Placeholders are `<LABEL>`, e.g.
`<EMAIL_ADDRESS>`, the same everywhere.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

ENTITIES = ("EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "US_SSN", "IP_ADDRESS",
            "UK_NINO", "PERSON", "ADDRESS", "SECRET")
PHONE_REGIONS = ("US", "GB", "DE", "FR", "IN")  # national formats; +NN numbers always count
_OWN = frozenset({"PERSON", "ADDRESS", "SECRET"})  # found by the patterns below only
# phonenumbers accepts some short numbers as valid (with region DE, "1695" of a street address);
# a phone number to redact has at least this many digits.
MIN_PHONE_DIGITS = 7

# Words before a number that make it a company's identifier, not a phone or card number
# ("order number 1234567890", "tracking: 1Z999AA10123456784", "invoice #00012345").
_IDENTIFIER_BEFORE = re.compile(
    r"\b(?:order|invoice|ticket|tracking|reference|ref|booking|confirmation|case|shipment|"
    r"parcel|package|receipt|transaction|serial|sku|item|product|return|rma|claim|po|"
    r"waybill|consignment)s?\b(?:\s*(?:number|no|nr|num|id|code)\b\.?)?\s*(?:is|was|:|#|-)?"
    r"\s*#?\s*$", re.IGNORECASE)
# Words before a bare digit run (no +, no separators) that make it a phone number.
_PHONE_BEFORE = re.compile(
    r"\b(?:call|called|calling|phone|mobile|cell|tel|telephone|ring|text|sms|whatsapp|fax|"
    r"number|reach|contact)\b[^\d\n]{0,20}$", re.IGNORECASE)
_CONTEXT_CHARS = 40

# Names after a phrase that says it is one, in any case ("my name is jane doe"); a word from
# _NOT_NAME ends the name.
_NOT_NAME = (r"(?:and|but|or|so|i|im|i'm|from|here|please|with|the|a|an|is|was|not|my|to|on|"
             r"in|at|for|of|calling|writing|and|just|also|again|too|if|because|thanks|thank|"
             r"hi|hello|hey)\b")
_NAME_WORD = rf"(?!{_NOT_NAME})[^\W\d_][\w'\-]*"

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
    ("PERSON", r"\b(?:this is|signed,?|regards,?|cardholder:?|account holder:?)\s+"
     r"((?:[A-Z][a-z'\-]+|[A-Z]\.)(?:\s+(?:[A-Z][a-z'\-]+|[A-Z]\.)){0,3})", 0, 0.6),
    ("PERSON", rf"\b(?:my name is|my name's|my full name is|i am called|i'm called|name:)\s+"
     rf"({_NAME_WORD}(?:\s+{_NAME_WORD}){{0,2}})", re.IGNORECASE, 0.6),
    ("ADDRESS", r"\b\d{1,5}[A-Za-z]?\s+(?:[A-Z][a-z]+\s+){1,4}(?:Street|St|Avenue|Ave|Road|Rd|"
     r"Lane|Ln|Drive|Dr|Boulevard|Blvd|Court|Ct|Place|Pl|Way|Terrace|Close|Square|Sq|Highway|"
     r"Hwy|Parkway|Pkwy|Crescent|Gardens|Row|Circle|Cir|Trail|Alley|Plaza)\b\.?"
     r"(?:,?\s+(?:Apt\.?|Suite|Unit|Flat|#)\s*\w+)?", 0, 0.6),
    ("US_SSN", r"(?<![\d-])\d{3}-\d{2}-\d{4}(?![\d-])", 0, 0.5),
]]
_DIGITS = re.compile(r"\d")


@dataclass(frozen=True)
class Span:
    """One piece of PII found in a text: [start, end), its label and how sure."""

    start: int
    end: int
    label: str
    score: float


def keep_patterns(patterns: Iterable[str], setting: str = "") -> list[re.Pattern[str]]:
    """Compiled patterns of identifiers never redacted; ValueError naming `setting` (if given)
    and the pattern when one is not a regular expression."""
    compiled = []
    for pattern in patterns:
        try:
            compiled.append(re.compile(pattern))
        except re.error as exc:
            where = f"{setting}: " if setting else ""
            raise ValueError(f"{where}{pattern!r} is not a regular expression ({exc})") from exc
    return compiled


class Redactor:
    """Finds PII with presidio and the extra patterns; replaces it with <LABEL>."""

    def __init__(self, entities: Iterable[str] = ENTITIES,
                 regions: Iterable[str] = PHONE_REGIONS, min_score: float = 0.3,
                 keep: Sequence[str] = ()) -> None:
        self.entities = list(entities)
        unknown = [e for e in self.entities if e not in ENTITIES]
        if unknown:
            raise ValueError(f"unknown PII label(s) {', '.join(unknown)} (known: "
                             f"{', '.join(ENTITIES)})")
        self.min_score = min_score
        self.keep = keep_patterns(keep)
        self._presidio_entities = [e for e in self.entities if e not in _OWN]
        self._engine = _presidio(self._presidio_entities, tuple(regions))

    def find(self, text: str) -> list[Span]:
        """Non-overlapping spans, longest and surest first where they overlap."""
        found: list[Span] = []
        # Every presidio kind holds a digit, an "@" or (IPv6) "::"; most turns hold none.
        if self._engine is not None and text and (
                "@" in text or "::" in text or _DIGITS.search(text)):
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
        kept = [(m.start(), m.end()) for p in self.keep for m in p.finditer(text)]
        return _without_overlaps([s for s in found if _is_pii(text, s) and not any(
            s.start < end and start < s.end for start, end in kept)])

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

    def redact_text(self, text: str) -> str:
        """Only the redacted text (exports, training data)."""
        return self.redact(text)[0]

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


def counts(spans: Iterable[Span]) -> Counter[str]:
    """How many spans of each label."""
    return Counter(s.label for s in spans)


def value_key(value: str, label: str) -> str:
    """A value in a form that compares across spellings: digits only for numbers."""
    if label in ("PHONE_NUMBER", "CREDIT_CARD", "US_SSN"):
        digits = re.sub(r"\D", "", value)
        return digits[-9:] if label == "PHONE_NUMBER" else digits  # country codes vary
    return re.sub(r"\s", "", value).lower()


def _is_pii(text: str, span: Span) -> bool:
    """False for what only looks like a phone or (unchecked) card number: short numbers, and
    numbers named as an order, invoice, tracking... number; a bare digit run is a phone number
    only after phone words."""
    if span.label not in ("PHONE_NUMBER", "CREDIT_CARD") or (
            span.label == "CREDIT_CARD" and span.score >= 1.0):  # Luhn-checked by presidio
        return True
    piece = text[span.start:span.end]
    before = text[max(0, span.start - _CONTEXT_CHARS):span.start]
    international = piece.startswith("+") or (piece.startswith("00") and not piece.isdigit())
    if not international and _IDENTIFIER_BEFORE.search(before):
        return False
    if span.label == "CREDIT_CARD":
        return True
    if len(_DIGITS.findall(piece)) < MIN_PHONE_DIGITS:
        return False
    if piece.isdigit() and not international:  # no format: only with phone words before
        return _PHONE_BEFORE.search(before) is not None
    return True


def _without_overlaps(spans: list[Span]) -> list[Span]:
    chosen: list[Span] = []
    for span in sorted(spans, key=lambda s: (-(s.end - s.start), -s.score)):
        if all(span.end <= c.start or span.start >= c.end for c in chosen):
            chosen.append(span)
    return sorted(chosen, key=lambda s: s.start)


def _presidio(entities: list[str], regions: tuple[str, ...]) -> Any:
    """An AnalyzerEngine with the pattern recognizers only, on a blank spaCy pipeline."""
    from bot.shared.presidio_engine import analyzer

    return analyzer(entities, regions) if entities else None
