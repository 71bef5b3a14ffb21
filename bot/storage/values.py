"""What the store writes: NUL replaced in every string, keys refused when too long to store."""

from __future__ import annotations

from typing import Any

from bot.errors import InputError
from bot.storage.models import ID_LENGTH

NUL_REPLACEMENT = "\ufffd"  # PostgreSQL cannot store NUL in text; every backend stores this


def checked(value: str, what: str, limit: int) -> str:
    """A key with NULs replaced, refused (on every backend alike) when it is too long."""
    value = clean(value)
    if len(value) > limit:
        raise InputError(f"{what} longer than {limit} characters: {value[:40]!r}...")
    return value


def checked_id(conversation_id: str) -> str:
    """A conversation id with NULs replaced, or InputError if it is too long to store."""
    return checked(conversation_id, "conversation id", ID_LENGTH)


def clean(value: Any) -> Any:
    """Strings (also inside lists and dicts, keys too) with NUL replaced, which PostgreSQL
    cannot store, so that every backend stores the same."""
    if isinstance(value, str):
        return value.replace("\x00", NUL_REPLACEMENT)
    if isinstance(value, list | tuple):
        return [clean(v) for v in value]
    if isinstance(value, dict):
        return {clean(k): clean(v) for k, v in value.items()}
    return value
