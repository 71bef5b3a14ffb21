"""The safety section: input and output guards, PII redaction, rate limits and cool-downs."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from bot.settings.base import Section as _Section
from bot.shared.pii import ENTITIES as PII_LABELS
from bot.shared.pii import PHONE_REGIONS, keep_patterns

InputGuard = Literal["normalize", "rate", "injection", "harmful", "abuse", "pii"]
OutputGuard = Literal["toxicity", "blocklist", "pii_leak", "prompt_leak"]
INPUT_GUARDS: tuple[InputGuard, ...] = ("normalize", "rate", "injection", "harmful", "abuse",
                                        "pii")
OUTPUT_GUARDS: tuple[OutputGuard, ...] = ("toxicity", "blocklist", "pii_leak", "prompt_leak")
PII_ENTITIES = PII_LABELS  # bot/shared/pii.py: the one redactor's labels


class SafetySettings(_Section):
    """Input guards (before retrieval) and output guards (on generated text); bot/safety/."""

    enabled: bool = Field(True, description="Run the guards at all (off: nothing is checked "
                          "and PII is stored as typed).")
    input_guards: list[InputGuard] = (
        Field(default_factory=lambda: list(INPUT_GUARDS), description="Input guards, in the "
              "order they run; the first block wins. PII is redacted in what is stored "
              "whether or not 'pii' is listed (see redact_stored)."))
    output_guards: list[OutputGuard] = Field(
        default_factory=lambda: list(OUTPUT_GUARDS), description="Guards on every generated "
        "sentence before it is shown; a block stops the answer there, like a failed grounding "
        "check.")
    injection_threshold: float = Field(0.5, ge=0.0, le=1.0, description="Probability of the "
                                       "learned injection head at which a message is blocked "
                                       "(patterns block on their own). Tuned on data/safety "
                                       "dev.")
    harmful_threshold: float = Field(0.988, ge=0.0, le=1.0, description="Probability of the "
                                     "learned harmful-request head at which a message is "
                                     "blocked (the lexicon blocks on its own).")
    abuse_threshold: float = Field(0.8, ge=0.0, le=1.0, description="alt-profanity-check "
                                   "probability at which a customer's message is abuse.")
    abuse_allow: list[str] = Field(
        default_factory=lambda: ["hell", "the hell", "damn", "dammit", "bloody", "crap",
                                 "crappy", "freaking", "frigging", "heck", "wtf"],
        description="Mild swear words a frustrated customer may use: left out before the abuse "
        "score (\"where the hell is my parcel\" is a customer, not abuse).")
    abuse_allow_frustration: bool = Field(
        True, description="Let through swearing that is aimed at no one in a message that asks "
        "for something (\"this bullshit jacket broke, how do I return it?\"); swearing at the "
        "bot or staff is still abuse.")
    output_toxicity_threshold: float = Field(0.5, ge=0.0, le=1.0, description="The same "
                                             "probability for a generated sentence (stricter: "
                                             "the bot speaks for the company).")
    detector_path: Path | None = Field(None, description="Weights of the learned heads "
                                       "(default: the file shipped in bot/safety/, made by "
                                       "training/safety_detector.py).")
    blocklist: list[str] = Field(default_factory=list, description="Words and sentences the "
                                 "bot must never say (case, accents and homoglyphs folded).")
    pii_entities: list[str] = Field(default_factory=lambda: list(PII_ENTITIES),
                                    description="PII labels found and redacted.")
    phone_regions: list[str] = Field(default_factory=lambda: list(PHONE_REGIONS),
                                     description="Regions whose national phone formats are "
                                     "recognised (international +NN numbers always are).")
    pii_keep_patterns: list[str] = Field(
        default_factory=list, description="Regular expressions of identifiers the company "
        "keeps, never redacted (e.g. order ids 'KO-\\d{6}'); digits after 'order', "
        "'invoice', 'tracking' and the like are never taken for phone numbers anyway.")
    pii_use_in_turn: bool = Field(True, description="The live turn (retrieval, generation) may "
                                  "use the customer's PII; off: it sees the redacted text.")
    redact_stored: bool = Field(True, description="Redact PII in everything stored and logged "
                                "(the message, the retrieval query, generated text, checks).")
    rate_per_minute: int = Field(20, ge=0, description="Messages one user may send per minute "
                                 "in one conversation (0: no limit).")
    flood_repeats: int = Field(4, ge=0, description="The same message this many times within "
                               "flood_window_seconds (one user, one conversation) is blocked "
                               "(0: off).")
    flood_window_seconds: float = Field(120.0, gt=0, description="Window of the flood guard.")
    cooldown_after: int = Field(3, ge=0, description="After this many blocked messages in a "
                                "conversation it cools down (0: never).")
    cooldown_seconds: float = Field(300.0, ge=0, description="How long a cool-down lasts.")
    handoff_after: int = Field(0, ge=0, description="After this many blocked messages the "
                               "conversation goes to a human instead (0: never; checked "
                               "before cooldown_after).")

    @field_validator("pii_entities")
    @classmethod
    def _known_entities(cls, entities: list[str]) -> list[str]:
        unknown = [e for e in entities if e not in PII_ENTITIES]
        if unknown:
            raise ValueError(f"unknown PII label(s) {', '.join(unknown)} (known: "
                             f"{', '.join(PII_ENTITIES)})")
        return entities

    @field_validator("pii_keep_patterns")
    @classmethod
    def _valid_patterns(cls, patterns: list[str]) -> list[str]:
        keep_patterns(patterns)  # the error names the setting and the pattern
        return patterns

    @field_validator("detector_path")
    @classmethod
    def _expand_user(cls, path: Path | None) -> Path | None:
        return path.expanduser() if path is not None else None
