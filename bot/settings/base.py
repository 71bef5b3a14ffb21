"""What every settings section shares: the section base class and {placeholder} parsing."""

from __future__ import annotations

import string
from collections.abc import Iterator

from pydantic import BaseModel, ConfigDict

# The persona's and Telegram's texts may all use these two.
NAMES = frozenset({"bot_name", "company_name"})


class Section(BaseModel):
    """A settings section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def placeholders(text: str) -> Iterator[str]:
    """The field names of the {placeholders} in a format string; ValueError if malformed."""
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise ValueError(f"malformed braces: {exc} (write {{{{ and }}}} for a literal brace)"
                         ) from None
    for _, name, spec, _ in parsed:
        if name is not None:
            yield name
            yield from placeholders(spec or "")

