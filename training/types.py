"""The data that flows through training: turns, conversations, token rows (shared by all steps)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Role = Literal["system", "user", "assistant"]
IGNORE = -100  # the label of a token that carries no loss (torch's cross_entropy ignore_index)


@dataclass(frozen=True)
class Turn:
    """One message of a conversation, with the role the chat template knows it by.

    `train=False` keeps an assistant turn out of the loss: it is context, such as the worked
    example in a grounded prompt, not a reply to learn.
    """

    role: Role
    content: str
    train: bool = True


@dataclass(frozen=True)
class Conversation:
    """One whole conversation; `id` is unique across all inputs; `source` says where it came from
    ("file", or "file:line" for line-based formats), for messages and the data report.
    Conversations with the same `group` (default: their own id) stay on one side of the
    train / eval split (variants of one example must not leak across it)."""

    id: str
    turns: tuple[Turn, ...]
    source: str = ""
    group: str = ""

    @property
    def split_key(self) -> str:
        return self.group or self.id


@dataclass(frozen=True)
class Example:
    """One tokenised conversation: labels are IGNORE except on assistant tokens."""

    input_ids: list[int]
    labels: list[int]
    conversation_id: str = ""

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass
class Row:
    """One sequence of a batch: a single example, or several packed ones whose position_ids
    restart at 0 where each begins (so the model attends within an example only)."""

    input_ids: list[int] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    position_ids: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.input_ids)
