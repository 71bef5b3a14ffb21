"""Prompt leak: generated text must not echo the system prompt or its distinctive lines."""

from __future__ import annotations

import re

from bot.safety.base import GuardContext, Verdict

_WORD = re.compile(r"[a-z0-9']+")


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _grams(words: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


class PromptLeakGuard:
    """Blocks a sentence sharing a run of `n` words with the secret texts, or most of its
    shorter runs; runs that also occur in the public texts (greeting, FAQ) do not count."""

    name = "prompt_leak"

    def __init__(self, secret: list[str], public: list[str], n: int = 7, share: float = 0.6,
                 short: int = 3) -> None:
        self.n = n
        self.share = share
        self.short = short
        public_words = [_words(p) for p in public]
        public_long = set().union(*(_grams(w, n) for w in public_words)) if public_words else set()
        public_short = (set().union(*(_grams(w, short) for w in public_words))
                        if public_words else set())
        secret_words = [_words(s) for s in secret]
        self._long = set().union(*(_grams(w, n) for w in secret_words)) - public_long
        self._short = set().union(*(_grams(w, short) for w in secret_words)) - public_short

    def check(self, text: str, context: GuardContext) -> Verdict:
        """Blocked on a long shared run, or when most short runs are the prompt's."""
        words = _words(text)
        if _grams(words, self.n) & self._long:
            return Verdict(self.name, False, "echoes the system prompt", 1.0,
                           category="prompt_leak")
        grams = _grams(words, self.short)
        score = len(grams & self._short) / len(grams) if grams else 0.0
        if score >= self.share and len(grams) >= 6:  # short common phrases are no leak
            return Verdict(self.name, False, f"echoes the system prompt ({score:.0%} of it)",
                           score, category="prompt_leak")
        return Verdict(self.name, True, "", score)
