"""The messages that cross the boundary between channels and the dialogue manager."""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any, NotRequired, TypedDict


class Decision(str, Enum):
    """What the dialogue manager decided to do with a message."""

    ANSWER = "answer"  # a confident FAQ match: the FAQ answer is sent
    GENERATE = "generate"  # a middling match: the model writes an answer grounded in the FAQ
    CLARIFY = "clarify"  # a middling match: "Did you mean ...?"
    FALLBACK = "fallback"  # nothing matches: say so and offer a human
    HANDOFF = "handoff"  # the customer asked for a human
    INVALID = "invalid"  # empty or over-long input
    WAITING = "waiting"  # the conversation is with a human: the bot only says a colleague replies
    ERROR = "error"  # the turn failed; the customer got an apology, the cause is logged and stored
    BLOCKED = "blocked"  # a safety guard refused the message; the customer got a short reply
    # An operator holds the conversation: the customer's message is stored for them and the
    # bot says nothing (the reply's text is empty and no bot message is stored).
    HELD = "held"
    # Not a reply: the bot told a customer waiting for a human how long the wait is.
    NOTICE = "notice"
    ASK = "ask"  # an action needs something: the bot asks for a slot or a confirmation
    ACTION = "action"  # an answer from the company's own system (an action's call)


class ConversationStatus(str, Enum):
    """Who answers a conversation."""

    BOT = "bot"  # the bot answers
    HANDOFF = "handoff"  # waiting for / held by a human: the bot must not answer as usual
    CLOSED = "closed"  # an operator finished it; the bot answers anything the customer adds


@dataclass(frozen=True)
class UserMessage:
    """A customer's message as a channel hands it over."""

    text: str
    conversation_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    channel: str = "terminal"
    user_id: str = "local"
    # A channel's own id for the message (e.g. a web client's): a message re-sent with an id
    # the conversation already had is not answered twice; its stored reply is returned again.
    client_id: str | None = None
    # Who sent it, for learning's per-customer shares (bot/learning/): a digest of the web
    # client's address, say; never stored with the message. None: the channel and user id.
    source: str | None = None

    @property
    def sender(self) -> str:
        """The learning source: `source`, else the channel and the user id."""
        return self.source or f"{self.channel}:{self.user_id}"


@dataclass(frozen=True)
class TextEvent:
    """Verified text for the customer, in order; a turn's pieces add up to its reply's text."""

    text: str


@dataclass(frozen=True)
class StatusEvent:
    """What the turn is doing while the customer waits ("looking_up": an action's call runs).
    Not part of the reply: a channel may show it until the reply comes, or ignore it."""

    kind: str
    text: str


@dataclass(frozen=True)
class Source:
    """A FAQ entry the reply drew on (or offered), with its retrieval score."""

    id: str
    question: str
    score: float
    link: str | None = None  # the entry's web page, if the FAQ gives one


@dataclass(frozen=True)
class Candidate:
    """A generated answer and its grounding score."""

    text: str
    score: float


class RetrievedHit(TypedDict):
    """One FAQ entry retrieval found for a turn."""

    id: str
    score: float  # rounded to 4 places


class SentenceCheckRecord(TypedDict):
    """The grounding (and output-guard) verdict on one generated sentence."""

    text: str
    score: float
    supported: bool
    reason: NotRequired[str]  # why it was not supported (a guard's block or the grounding)


class CandidateRecord(TypedDict):
    """A generated candidate as stored (BotReply.candidates, kept in the stored meta)."""

    text: str
    score: float


class Correction(TypedDict):
    """An operator's right answer to a wrong bot answer (supportbot export trains on it)."""

    text: str
    operator: str
    at: str  # ISO time


class CallRecordMeta(TypedDict):
    """An action's HTTP call as recorded: never the response body, headers or secrets."""

    status: int | None  # the HTTP status, None when no answer came
    outcome: str  # "ok", or why not: "timeout", "http_status", "breaker_open", ...
    ms: float  # how long the call took, retries included


class ActionRecord(TypedDict):
    """An action's state in a bot reply: the dialogue reads it back from the last bot message
    to go on (which slot it asked for, what it has), so every worker continues it alike."""

    id: str
    slots: dict[str, str]  # the values given so far (redacted in storage where PII)
    asking: NotRequired[str]  # the slot asked for, or "confirm"
    tries: NotRequired[int]  # wrong answers to this question so far
    call: NotRequired[CallRecordMeta]
    ended: NotRequired[str]  # "answered", "cancelled", "failed", "gave_up"


class ReplyMeta(TypedDict, total=False):
    """What a turn records beside its reply: the protocol between the dialogue core, storage
    and every channel. Every key is optional; it goes over the wire and into storage as JSON."""

    # How the turn ended
    error: str  # the turn failed ("busy" when the conversation's previous turn still ran)
    stored: bool  # False: the turn was refused before anything was stored (busy)
    storage_error: str  # storing the turn failed: the reply has no message_id
    interrupted: bool  # the consumer went away mid-turn; what was shown is stored
    duplicate: bool  # a re-sent client message: its stored reply, returned again
    # Canned replies and refusals
    intent: str  # a canned reply's intent: "identity" or "no-human"
    input_chars: int  # the length of an over-long message (decision invalid)
    claimed_by: str  # the operator holding the conversation (decision held)
    blocked_by: str  # the guard that refused the message (decision blocked), or "cooldown"
    blocks: int  # the conversation's counted blocks so far
    after_blocks: int  # the blocks after which the bot handed off
    cooldown: bool  # this block started a cool-down
    # Retrieval
    retrieval_query: str  # what was searched (the message, or joined with the previous one)
    retrieved: list[RetrievedHit]  # what the search found, best first
    doubted: str  # an entry customers agreed this wording does not mean: "Did you mean" instead
    # Actions (bot/dialogue/actions.py)
    action: ActionRecord  # the action in progress or done, and its call
    # Generation (the middle band with dialogue.middle: generate)
    model: str  # the generator's name
    prompt_tokens: int  # tokens in the prompt
    prompt_entries: list[str]  # ids of the FAQ entries in the prompt
    history_messages: int  # earlier messages in the prompt
    generation_seconds: float  # from the request to the last checked sentence
    generated: str  # the model's raw text
    checks: list[SentenceCheckRecord]  # the verdict on each checked sentence, in order
    cut_off: str  # an unfinished last sentence, dropped
    rejected: str  # why nothing generated was shown ("grounding: ..." or "safety: ...")
    held_back: str  # why the rest of a generated answer was not shown
    generation_error: str  # generation failed: the turn offered "Did you mean" instead
    # Added by storage and operators to a stored reply
    candidates: list[CandidateRecord]  # the generated candidates with their scores
    correction: Correction  # an operator's right answer (bot/operators/store.py correct)


@dataclass(frozen=True)
class BotReply:
    """The bot's answer: text plus decision, sources, confidence and timing."""

    text: str
    decision: Decision
    conversation_id: str
    sources: list[Source] = field(default_factory=list)
    suggestions: list[Source] = field(default_factory=list)
    confidence: float = 0.0
    latency_ms: float = 0.0
    candidates: list[Candidate] = field(default_factory=list)
    meta: ReplyMeta = field(default_factory=lambda: ReplyMeta())
    message_id: int | None = None  # the stored bot message (what feedback refers to), once stored

    @property
    def faq_ids(self) -> list[str]:
        """Ids of the FAQ entries used (or offered)."""
        return [s.id for s in (self.sources or self.suggestions)]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        data = asdict(self)
        data["decision"] = self.decision.value
        return data


@dataclass(frozen=True)
class TranscriptItem:
    """One stored message of a conversation: the customer's, or the bot's reply and its rating."""

    role: str  # "user", "bot" or "operator"
    text: str
    created_at: datetime
    message_id: int
    client_id: str | None = None
    reply: BotReply | None = None  # for the bot's messages
    feedback: str | None = None  # "up", "down" or None
    name: str | None = None  # the operator's, for an operator's message
    held: bool = False  # a customer's message stored for the operator holding the conversation
