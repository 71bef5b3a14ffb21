"""presidio-analyzer offline: pattern recognizers on a blank spaCy pipeline (no model download).

presidio's EmailRecognizer checks domains with tldextract, which by default downloads the
public-suffix list; here it uses the snapshot tldextract ships.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import spacy
import tldextract
from presidio_analyzer import AnalyzerEngine, Pattern, RecognizerRegistry
from presidio_analyzer.nlp_engine import NlpArtifacts, NlpEngine
from presidio_analyzer.predefined_recognizers import (
    CreditCardRecognizer,
    EmailRecognizer,
    IbanRecognizer,
    IpRecognizer,
    PhoneRecognizer,
    UkNinoRecognizer,
    UsSsnRecognizer,
)

_OFFLINE_TLD = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)
# presidio's card pattern misses Mastercard's 2-series (2221-2720, issued since 2017); Luhn still
# validates every match.
MASTERCARD_2_SERIES = Pattern(
    "Mastercard 2-series",
    r"\b(?:222[1-9]|22[3-9]\d|2[3-6]\d{2}|27[01]\d|2720)[- ]?\d{4}[- ]?\d{4}[- ]?\d{4}\b", 0.3)


class OfflineEmailRecognizer(EmailRecognizer):
    """presidio's email recognizer, checking the domain against the bundled suffix list."""

    def validate_result(self, pattern_text: str) -> bool:
        """A known public suffix makes the address valid."""
        return bool(_OFFLINE_TLD(pattern_text).suffix)


class BlankSpacyEngine(NlpEngine):
    """Tokens from `spacy.blank("en")` (lower-case words as lemmas) for presidio's context
    words; no named entities (there is no statistical model)."""

    def __init__(self) -> None:
        self.nlp = spacy.blank("en")

    def load(self) -> None:
        """Nothing to load."""

    def is_loaded(self) -> bool:
        """Always loaded."""
        return True

    def process_text(self, text: str, language: str) -> NlpArtifacts:
        """Tokens and lower-case lemmas of the text."""
        doc = self.nlp(text)
        return NlpArtifacts(entities=[], tokens=doc, tokens_indices=[t.idx for t in doc],
                            lemmas=[t.lower_ for t in doc], nlp_engine=self, language=language)

    def process_batch(self, texts: Any, language: str, batch_size: int = 1,
                      n_process: int = 1, **kwargs: Any) -> Iterator[tuple[str, NlpArtifacts]]:
        """Each text with its artifacts."""
        for text in texts:
            yield text, self.process_text(text, language)

    def is_stopword(self, word: str, language: str) -> bool:
        """spaCy's English stop words."""
        return bool(self.nlp.vocab[word].is_stop)

    def is_punct(self, word: str, language: str) -> bool:
        """Punctuation by spaCy's lexical attributes."""
        return bool(self.nlp.vocab[word].is_punct)

    def get_supported_entities(self) -> list[str]:
        """None: no NER model."""
        return []

    def get_supported_languages(self) -> list[str]:
        """English."""
        return ["en"]


def analyzer(entities: list[str], regions: tuple[str, ...]) -> AnalyzerEngine:
    """An AnalyzerEngine with the recognizers for `entities` only."""
    recognizers: dict[str, Any] = {
        "EMAIL_ADDRESS": OfflineEmailRecognizer(),
        "CREDIT_CARD": CreditCardRecognizer(patterns=[*CreditCardRecognizer.PATTERNS,
                                                      MASTERCARD_2_SERIES]),
        "IBAN_CODE": IbanRecognizer(), "IP_ADDRESS": IpRecognizer(),
        "PHONE_NUMBER": PhoneRecognizer(supported_regions=regions),
        "US_SSN": UsSsnRecognizer(), "UK_NINO": UkNinoRecognizer()}
    registry = RecognizerRegistry(supported_languages=["en"])
    for entity in entities:
        if entity in recognizers:
            registry.add_recognizer(recognizers[entity])
    engine = AnalyzerEngine(registry=registry, nlp_engine=BlankSpacyEngine(),
                            supported_languages=["en"])
    engine.analyze("warm up +1 212 555 0134 a@b.com", language="en")  # lazy tables load now
    return engine
