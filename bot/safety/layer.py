"""The safety layer of a dialogue: input and output pipelines, redaction, and what a blocked
customer is told (with cool-down or handoff after repeated blocks)."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bot.lru import BoundedLRU
from bot.safety.base import Embed, GuardContext, Verdict
from bot.safety.build import input_pipeline, output_pipeline, redactor_for
from bot.safety.detector import Detector
from bot.safety.pii import Redactor
from bot.safety.pipeline import GuardPipeline, PipelineResult
from bot.settings import PersonaSettings, SafetySettings
from bot.types import Decision, ReplyMeta

# Blocks that count towards a cool-down or handoff: attacks and abuse, not a person in
# distress, and not the rate limit (which is its own cool-down).
_COUNTED = frozenset({"injection", "harmful", "abuse"})
# Conversations whose block counts and cool-downs are remembered; the least recently blocked
# are forgotten beyond it, so a long-running server's memory stays bounded.
MAX_CONVERSATIONS = 100_000


@dataclass(frozen=True)
class Refusal:
    """What a blocked customer is told, and what the turn records."""

    text: str
    decision: Decision
    meta: ReplyMeta  # what the reply records of the block


class SafetyLayer:
    """Everything a dialogue needs from bot/safety, built once from the settings."""

    def __init__(self, settings: SafetySettings, persona: PersonaSettings,
                 faq_texts: Sequence[str] = (), embed: Embed | None = None,
                 detector: Detector | None = None, redactor: Redactor | None = None,
                 max_conversations: int = MAX_CONVERSATIONS) -> None:
        self.settings = settings
        self.persona = persona
        self.embed = embed
        self.redactor = redactor or redactor_for(settings)
        self.inputs: GuardPipeline = input_pipeline(settings, detector, self.redactor)
        public = [persona.render(persona.greeting), persona.render(persona.identity_text),
                  *faq_texts]
        self.outputs: GuardPipeline = output_pipeline(
            settings, [persona.render(persona.system_prompt)], public, self.redactor)
        self.faq_values = self.redactor.values(faq_texts)  # the company's own contacts
        self._blocks: BoundedLRU[str, int] = BoundedLRU(max_conversations)
        self._cooling: BoundedLRU[str, float] = BoundedLRU(max_conversations)
        self._lock = threading.Lock()

    def learn_faq(self, texts: Sequence[str]) -> None:
        """Texts of FAQ additions (bot/operators/faq.py): their contacts are the company's too."""
        self.faq_values = self.faq_values | self.redactor.values(texts)

    def check_input(self, text: str, user_id: str, conversation_id: str,
                    channel: str) -> PipelineResult:
        """Run the input guards (on a worker thread: it may embed the text)."""
        context = GuardContext(user_id=user_id, conversation_id=conversation_id, channel=channel)
        return self.inputs.run(text, context, self.embed)

    def check_output(self, sentence: str, customer_text: str) -> PipelineResult:
        """Run the output guards on one generated sentence."""
        allowed = self.faq_values
        if self.settings.pii_use_in_turn:
            allowed = allowed | self.redactor.values([customer_text])
        context = GuardContext(question=customer_text, allowed_values=allowed)
        return self.outputs.run(sentence, context)

    def turn_text(self, result: PipelineResult) -> str:
        """What the live turn uses: the cleaned text, or the redacted one if PII may not be."""
        if self.settings.pii_use_in_turn or result.redacted is None:
            return result.text
        return result.redacted

    def cooldown_left(self, conversation_id: str, now: float | None = None) -> float:
        """Seconds of cool-down left for the conversation (0: none)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            until = self._cooling.get(conversation_id, 0.0)
            if until and until <= now:
                self._cooling.pop(conversation_id)
                self._blocks.pop(conversation_id, None)
            return max(0.0, until - now)

    def cooldown_refusal(self, seconds: float) -> Refusal:
        """The reply during a cool-down."""
        minutes = max(1, round(seconds / 60))
        return Refusal(self.persona.render(self.persona.cooldown_text, minutes=minutes),
                       Decision.BLOCKED, {"blocked_by": "cooldown"})

    def refusal(self, conversation_id: str, verdict: Verdict) -> Refusal:
        """The polite reply for a block (the rule is not named to the customer); repeated
        blocks end in a handoff or a cool-down as configured."""
        persona = self.persona
        meta: ReplyMeta = {"blocked_by": verdict.guard}
        if verdict.category == "self-harm":
            return Refusal(persona.render(persona.self_harm_text), Decision.BLOCKED, meta)
        if verdict.guard == "rate":
            return Refusal(persona.render(persona.rate_text), Decision.BLOCKED, meta)
        text = {"abuse": persona.abuse_text, "harmful": persona.harmful_text}.get(
            verdict.guard, persona.blocked_text)
        if verdict.guard not in _COUNTED:
            return Refusal(persona.render(text), Decision.BLOCKED, meta)
        with self._lock:
            count = self._blocks[conversation_id] = self._blocks.get(conversation_id, 0) + 1
            meta["blocks"] = count
            handoff, cooldown = self.settings.handoff_after, self.settings.cooldown_after
            if handoff and count >= handoff:
                self._blocks.pop(conversation_id, None)
                return Refusal(persona.render(persona.handoff_text), Decision.HANDOFF,
                               {**meta, "after_blocks": count})
            if cooldown and count >= cooldown and self.settings.cooldown_seconds > 0:
                self._cooling[conversation_id] = time.monotonic() + self.settings.cooldown_seconds
                refusal = self.cooldown_refusal(self.settings.cooldown_seconds)
                return Refusal(refusal.text, Decision.BLOCKED, {**meta, "cooldown": True})
        return Refusal(persona.render(text), Decision.BLOCKED, meta)

    def redact(self, text: str, keep_faq: bool = False) -> str:
        """The text with PII redacted (the FAQ's own contacts kept if `keep_faq`)."""
        if not self.settings.redact_stored:
            return text
        return self.redactor.redact(text, self.faq_values if keep_faq else frozenset())[0]

    def redact_data(self, data: Any) -> Any:
        """Every string inside a JSON-like value redacted (the FAQ's own contacts kept)."""
        if not self.settings.redact_stored:
            return data
        return self.redactor.redact_data(data, self.faq_values)

    def redact_id(self, value: str, limit: int) -> str:
        """A customer-given id (a client message id) as stored: itself, or if PII is found in
        it, the redacted form with a digest of the id (the same id keeps its key, different
        ones stay apart), at most `limit` characters."""
        redacted = self.redact(value)
        if redacted == value:
            return value
        digest = hashlib.blake2b(value.encode("utf-8", "surrogatepass"), digest_size=8)
        return f"{redacted[:limit - 17]}#{digest.hexdigest()}"
