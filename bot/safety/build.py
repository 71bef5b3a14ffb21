"""Build the input and output pipelines from SafetySettings (read once, at the edge)."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

from bot.safety.base import Guard
from bot.safety.blocklist import BlocklistGuard
from bot.safety.detector import Detector, load_detector
from bot.safety.harmful import HarmfulGuard
from bot.safety.injection import InjectionGuard
from bot.safety.normalize import Normalizer
from bot.safety.pii import PiiGuard, PiiLeakGuard, Redactor
from bot.safety.pipeline import GuardPipeline
from bot.safety.prompt_leak import PromptLeakGuard
from bot.safety.rate import RateGuard
from bot.safety.toxicity import AbuseGuard, Scorer, profanity_scorer
from bot.settings import SafetySettings


@lru_cache(maxsize=4)
def cached_redactor(entities: tuple[str, ...], regions: tuple[str, ...],
                    keep: tuple[str, ...] = ()) -> Redactor:
    """One redactor per configuration per process (presidio takes ~1 s to set up)."""
    return Redactor(entities, regions, keep=keep)


def redactor_for(settings: SafetySettings) -> Redactor:
    """The redactor the settings describe: stored conversations, exports and training data."""
    return cached_redactor(tuple(settings.pii_entities), tuple(settings.phone_regions),
                           tuple(settings.pii_keep_patterns))


@lru_cache(maxsize=1)
def _scorer() -> Scorer:
    return profanity_scorer()


def input_pipeline(settings: SafetySettings, detector: Detector | None = None,
                   redactor: Redactor | None = None) -> GuardPipeline:
    """The input guards in the configured order."""
    detector = detector or load_detector(settings.detector_path)
    makers: dict[str, Callable[[], Guard]] = {
        "normalize": Normalizer,
        "rate": lambda: RateGuard(settings.rate_per_minute, settings.flood_repeats,
                                  settings.flood_window_seconds),
        "injection": lambda: InjectionGuard(detector.head("injection"),
                                            settings.injection_threshold),
        "harmful": lambda: HarmfulGuard(detector.head("harmful"), settings.harmful_threshold),
        "abuse": lambda: AbuseGuard(_scorer(), settings.abuse_threshold,
                                    allow=settings.abuse_allow,
                                    frustration=settings.abuse_allow_frustration),
        "pii": lambda: PiiGuard(redactor or redactor_for(settings)),
    }
    return GuardPipeline([makers[name]() for name in settings.input_guards])


def output_pipeline(settings: SafetySettings, secret: list[str], public: list[str],
                    redactor: Redactor | None = None) -> GuardPipeline:
    """The output guards in the configured order; `secret` texts must never be echoed."""
    makers: dict[str, Callable[[], Guard]] = {
        "toxicity": lambda: AbuseGuard(_scorer(), settings.output_toxicity_threshold,
                                       name="toxicity"),
        "blocklist": lambda: BlocklistGuard(settings.blocklist),
        "pii_leak": lambda: PiiLeakGuard(redactor or redactor_for(settings)),
        "prompt_leak": lambda: PromptLeakGuard(secret, public),
    }
    return GuardPipeline([makers[name]() for name in settings.output_guards])
