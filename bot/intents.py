"""Short-message intents: asking for a human (or refusing one), 'are you a bot?', picks, yes/no."""

from __future__ import annotations

import re
from collections.abc import Sequence

from retrieval.corpus import FaqEntry

ORDINALS = {"one": 1, "first": 1, "1st": 1, "two": 2, "second": 2, "2nd": 2,
            "three": 3, "third": 3, "3rd": 3, "four": 4, "fourth": 4, "4th": 4,
            "five": 5, "fifth": 5, "5th": 5}
_PICK = re.compile(r"^(?:the\s+)?(?:number\s+|no\.?\s*|#\s*)?(\w+)(?:\s+one)?(?:\s+please)?$")
NEGATIVE = {"no", "nope", "none", "neither", "none of these", "none of them", "none of those",
            "no thanks", "no thank you", "something else"}
AFFIRMATIVE = {"yes", "y", "yes please", "yeah", "yep", "sure", "ok", "okay", "please",
               "please do", "yes connect me"}
HANDOFF_MAX_WORDS = 8
# Commands a channel passes through as typed (Telegram's /human); they always hand off.
HANDOFF_COMMANDS = frozenset({"/human", "/agent", "/operator"})
# A message that starts like a follow-up or points back ("and how long does that take?").
FOLLOW_UP = re.compile(r"^(?:and|also|but|so|or|what about|how about|then)\b|"
                       r"\b(?:it|that|this|those|these|them|they|one|there)\b")
# "I don't want a human", "no human please", "without an agent": a refusal, not a request.
_REFUSAL = re.compile(r"\b(?:no|not|don t|dont|do not|never|without|nobody|no one|stop|"
                      r"rather not|didn t|didnt|wasn t|isn t)\b")
_REQUEST = re.compile(r"\b(?:want|need|talk|speak|chat|connect|get|give|reach|transfer|put me|"
                      r"escalate|contact|let me|can i|could i|may i|is there|please|now)\b")
_LEADING_NO = re.compile(r"^\s*(?:no|nope|nah)\s*[,.!;:-]+\s*", re.IGNORECASE)
# "is this a human or a bot?", "am I talking to a person?", "are you a real person?"; not "is it
# possible to ...", "are you open on Sunday?": "is this" / "are you" must be about what it is.
_WHAT = (r"(?:a |an )?(?:real |live |actual |automated |virtual )?(?:bot|robot|chat ?bot|machine|"
         r"ai|human|person|computer|people|someone|assistant|program|automated|real)")
_IDENTITY = re.compile(rf"^(?:is (?:this|it|that)|are you|am i (?:talking|speaking|chatting) "
                       rf"(?:to|with)) {_WHAT}\b|"
                       r"^(?:who am i (?:talking|speaking|chatting) (?:to|with)|who are you|"
                       r"what are you)\b|\b(?:or (?:a |an )?(?:bot|robot|machine|ai)|"
                       r"(?:bot|robot|machine|ai) or)\b")


def simple(text: str) -> str:
    """Lower-case words only, for matching short replies like 'the second one' or 'yes'."""
    return " ".join(re.sub(r"[^\w\s#]", " ", text.casefold()).split())


class Intents:
    """Recognises the few short messages the dialogue manager answers without retrieval."""

    def __init__(self, handoff_keywords: Sequence[str]) -> None:
        keywords = sorted((simple(k) for k in handoff_keywords if simple(k)), key=len,
                          reverse=True)
        self._handoff = re.compile(r"\b(?:" + "|".join(map(re.escape, keywords)) + r")\b") \
            if keywords else None

    def asks_identity(self, text: str) -> bool:
        """'Is this a human or a bot?' and the like: a question about the bot, not a request."""
        return len(text.split()) <= HANDOFF_MAX_WORDS + 2 and _IDENTITY.search(text) is not None

    def refuses_human(self, raw: str) -> bool:
        """A short message that refuses a human: "I don't want a human", "no agent please"."""
        text = simple(raw)
        if self._handoff is None or len(text.split()) > HANDOFF_MAX_WORDS:
            return False
        return (self._handoff.search(text) is not None and not self.asks_identity(text)
                and _REFUSAL.search(text) is not None and not _LEADING_NO.match(raw))

    def wants_human(self, raw: str) -> bool:
        """A short message that asks for a human (agent, operator, ...), and does not refuse one
        ("no human please") or ask whether the bot is one ("is this a human?")."""
        if raw.strip().lower() in HANDOFF_COMMANDS:  # a channel's own command (Telegram)
            return True
        # "No, I want a human": a leading "no," answers the bot; the request follows it.
        text = simple(_LEADING_NO.sub("", raw))
        if self._handoff is None or len(text.split()) > HANDOFF_MAX_WORDS:
            return False
        if self._handoff.search(text) is None or self.asks_identity(text):
            return False
        # "human" alone or "agent please" asks; in a longer message the keyword must come with
        # a request ("I want a human"), not name a thing ("bones in the human body").
        asks = len(text.split()) <= 3 or _REQUEST.search(text) is not None
        return asks and _REFUSAL.search(text) is None


def pick(text: str, offered: Sequence[FaqEntry]) -> FaqEntry | None:
    """The offered entry the user chose by number, ordinal or by repeating its question."""
    match = _PICK.match(text)
    if match:
        token = match.group(1)
        number = int(token) if token.isdigit() else ORDINALS.get(token)
        if number is not None and 1 <= number <= len(offered):
            return offered[number - 1]
    for entry in offered:
        if any(simple(q) == text for q in entry.questions):
            return entry
    return None
