"""Telegram's text limits: lengths in UTF-16 units, and long answers split between sentences."""

from __future__ import annotations

import re

MAX_MESSAGE = 4096  # Telegram's limit for one message's text, in UTF-16 code units
# Where a long text may be cut: after a sentence's end or a line break; failing that, between
# words; failing that (a "word" longer than a message), anywhere.
_CUTS = (re.compile(r"(?<=[.!?…])\s+|\n+"), re.compile(r"\s+"))


def tg_len(text: str) -> int:
    """The length Telegram counts: UTF-16 code units (an emoji may count as two)."""
    return len(text.encode("utf-16-le")) // 2


def split_text(text: str, limit: int = MAX_MESSAGE) -> list[str]:
    """`text` as messages of at most `limit` units, cut between sentences where possible.

    The pieces are the text's own substrings, trimmed at the cuts: joined with the whitespace
    between them, they give the text back.
    """
    return _pack(text, limit, 0) if text.strip() else []


def _pack(text: str, limit: int, level: int) -> list[str]:
    if tg_len(text.strip()) <= limit:
        return [text.strip()]
    if level == len(_CUTS):
        return _chunks(text.strip(), limit)
    out: list[str] = []
    current = ""
    for segment in _segments(text, _CUTS[level]):
        if tg_len((current + segment).strip()) <= limit:
            current += segment
            continue
        if current.strip():
            out.append(current.strip())
        current = segment
        if tg_len(segment.strip()) > limit:  # one sentence (or word) longer than a message
            parts = _pack(segment, limit, level + 1)
            out.extend(parts[:-1])
            current = parts[-1] + segment[len(segment.rstrip()):]
    if current.strip():
        out.append(current.strip())
    return out


def _segments(text: str, cut: re.Pattern[str]) -> list[str]:
    """The text in pieces that each end with the whitespace of a cut (the last may not)."""
    segments, start = [], 0
    for match in cut.finditer(text):
        segments.append(text[start:match.end()])
        start = match.end()
    segments.append(text[start:])
    return [s for s in segments if s]


def _chunks(word: str, limit: int) -> list[str]:
    """A text without cut points, in pieces of at most `limit` units (pairs kept whole)."""
    out, current, used = [], "", 0
    for char in word:
        size = 2 if ord(char) > 0xFFFF else 1
        if used + size > limit:
            out.append(current)
            current, used = "", 0
        current += char
        used += size
    out.append(current)
    return out
