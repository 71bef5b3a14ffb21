"""Blocklisted terms: words and sentences the company's bot must never say."""

from __future__ import annotations

import re

from bot.safety.base import GuardContext, Verdict
from bot.safety.normalize import fold


class BlocklistGuard:
    """Blocks text containing any listed word or phrase (folded, on word boundaries)."""

    name = "blocklist"

    def __init__(self, terms: list[str]) -> None:
        self.terms = [t for t in (fold(term).strip() for term in terms) if t]
        self._pattern = re.compile("|".join(
            rf"(?<!\w){re.escape(t)}(?!\w)" for t in sorted(self.terms, key=len, reverse=True)
        )) if self.terms else None

    def check(self, text: str, context: GuardContext) -> Verdict:
        """Blocked if a listed term occurs (spaces, case, accents and homoglyphs folded)."""
        if self._pattern is None:
            return Verdict(self.name, True)
        folded = " ".join((context.folded or fold(text)).split())
        found = self._pattern.search(folded)
        if found:
            return Verdict(self.name, False, "a blocklisted term", 1.0, category="blocklist")
        return Verdict(self.name, True)
