"""Tidy a generated reply: drop a run-on into a new example turn and a cut-off last sentence."""

from __future__ import annotations

import re

# The prompt's worked example uses these headers; a small model sometimes starts another one.
RUN_ON = re.compile(r"\n\s*(?:FAQ|Question|Customer|User|Q)\s*:", re.IGNORECASE)
_SENTENCE_END = re.compile(r"[.!?][\"')\]]*(?=\s|$)")
ENDS_WELL = re.compile(r"[.!?][\"')\]]*$")


def tidy_reply(text: str) -> str:
    """Cut at a run-on header, then after the last complete sentence if the end is cut off."""
    text = RUN_ON.split(text, maxsplit=1)[0].strip()
    if not text or ENDS_WELL.search(text):
        return text
    ends = list(_SENTENCE_END.finditer(text))
    return text[:ends[-1].end()].strip() if ends else text
