"""What an action is once loaded: its slots, its HTTP call, its reply (issue 34).

Plain frozen dataclasses, built only by `bot.actions.spec.load_actions`, which checks every
field first; nothing here reads the environment, so a loaded action never holds a secret.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# A candidate slot value is a run of text between these: whitespace and punctuation, but not
# `/` (so `KO-123456/../../admin` is one candidate, which no sane pattern fullmatches).
_DELIMITERS = re.compile(r"[\s,;:!?#()\[\]{}<>\"'`|]+")
_EDGES = ".-_"
MAX_VALUE_CHARS = 200
# What a slot value never holds, whatever its pattern: it goes into URLs, headers and bodies.
_UNSAFE = re.compile(r"[/\\?#%\s\x00-\x1f\x7f]|\.\.")

IDEMPOTENT_METHODS = frozenset({"GET", "PUT", "DELETE", "HEAD"})
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def unsafe_value(value: str) -> bool:
    """Whether a slot value holds what never goes into a call: `/`, `\\`, `?`, `#`, `%`, `..`,
    whitespace or control characters."""
    return bool(_UNSAFE.search(value)) or len(value) > MAX_VALUE_CHARS


@dataclass(frozen=True)
class Slot:
    """A value the customer gives (an order number), found in their message by a pattern."""

    name: str
    pattern: str
    ask: str
    invalid: str | None = None
    upper: bool = False

    @property
    def regex(self) -> re.Pattern[str]:
        """The pattern, compiled case-insensitively (fullmatched against one candidate)."""
        return re.compile(self.pattern, re.IGNORECASE)

    def find(self, text: str) -> str | None:
        """The first candidate in `text` that the pattern fullmatches, or None.

        Candidates are the runs between whitespace and punctuation (not `/`), their trailing
        dots and dashes trimmed; a candidate holding anything `unsafe_value` refuses is skipped.
        """
        regex = self.regex
        for token in _DELIMITERS.split(text):
            for candidate in dict.fromkeys((token, token.strip(_EDGES))):
                if not candidate or unsafe_value(candidate):
                    continue
                if regex.fullmatch(candidate):
                    return candidate.upper() if self.upper else candidate
        return None

    @property
    def invalid_text(self) -> str:
        """What the bot says when the customer's answer holds no valid value."""
        return self.invalid or f"Sorry, I didn't catch that. {self.ask}"


@dataclass(frozen=True)
class Call:
    """The HTTP request an action makes; `url`, header values and string leaves of `body` are
    templates (`${ENV}` in url and headers, `{slot}` anywhere)."""

    method: str
    url: str
    headers: tuple[tuple[str, str], ...] = ()
    body: Any | None = None
    timeout_s: float = 3.0

    @property
    def idempotent(self) -> bool:
        """Whether the request may be repeated safely (retries only these)."""
        return self.method in IDEMPOTENT_METHODS


@dataclass(frozen=True)
class Reply:
    """The answer from the response: one template, or a field's value picking a template."""

    text: str | None = None
    field: str | None = None
    cases: tuple[tuple[str, str], ...] = ()
    default: str | None = None


@dataclass(frozen=True)
class Action:
    """One declared action: found by its questions, fills its slots, makes its call, replies."""

    id: str
    questions: tuple[str, ...]
    slots: tuple[Slot, ...]
    call: Call
    reply: Reply
    on_status: Mapping[int, str] = field(default_factory=dict)
    on_error: str = "Sorry, I can't do that right now. Please try again later."
    confirm: str | None = None
    line: int | None = None

    @property
    def changes(self) -> bool:
        """Whether the call may change something (any method but GET)."""
        return self.call.method != "GET"

    def slot(self, name: str) -> Slot:
        """The slot called `name` (KeyError if none)."""
        for slot in self.slots:
            if slot.name == name:
                return slot
        raise KeyError(name)
