"""What a turn is made of: the events it streams and what it has shown so far."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bot.types import BotReply, Decision, ReplyMeta, Source, StatusEvent, TextEvent

# What DialogueManager.stream yields: verified text (and what the turn is doing, while an
# action's call runs), then exactly one final reply.
Event = TextEvent | StatusEvent | BotReply
TokenSink = Callable[[str], None]  # receives verified text pieces, on the event loop
Verdicts = tuple[list[dict[str, Any]] | None, list[dict[str, Any]] | None]  # input, output


def normalise(text: str) -> str:
    """Collapse whitespace and strip the ends."""
    return " ".join(text.split())


@dataclass
class Turn:
    """What a turn has shown so far, so that an interrupted or failed turn stores exactly that."""

    shown: list[str] = field(default_factory=list)
    decision: Decision = Decision.ERROR
    sources: list[Source] = field(default_factory=list)
    meta: ReplyMeta = field(default_factory=lambda: ReplyMeta())
    undecided: bool = False  # counted in DialogueManager.undecided
    verdicts_in: list[dict[str, Any]] | None = None  # input guards' verdicts, once they ran
    verdicts_out: list[dict[str, Any]] = field(default_factory=list)  # output guards'
    vectors: dict[str, Any] = field(default_factory=dict)  # embeddings the guards made

    @property
    def text(self) -> str:
        """Everything shown so far."""
        return "".join(self.shown)
