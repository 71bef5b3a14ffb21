"""`learning`: what the bot learns from use (customers' picks and ratings, operators' answers)
and when a learnt phrasing is trusted enough to change retrieval (docs/learning.md)."""

from __future__ import annotations

from pydantic import Field

from bot.settings.base import Section


class LearningSettings(Section):
    """Learning from use: signals, when they are trusted, and how much one customer may teach."""

    enabled: bool = Field(True, description="Record customers' 'Did you mean' picks, 'none "
                          "of these', thumbs up and down, and operators' FAQ answers, and add "
                          "a customer's wording to an entry once it is trusted.")
    confirmations: int = Field(2, ge=1, le=100, description="Distinct customers (client "
                               "addresses or Telegram users, in distinct conversations) whose "
                               "signals must agree, net of the ones that disagree, before a "
                               "wording changes retrieval; an operator's word is enough alone.")
    similarity: float = Field(0.75, ge=0.5, le=1.0, description="Cosine similarity at which two "
                              "customers' wordings count as the same question (for "
                              "confirmations and conflicts); 1.0: only the same words.")
    per_conversation: int = Field(3, ge=1, le=100, description="Signals one conversation may "
                                  "give; later ones are not recorded.")
    per_source_per_hour: int = Field(10, ge=1, le=10000, description="Signals one customer "
                                     "(client address, Telegram user) may give in an hour.")
    signals_per_hour: int = Field(2000, ge=1, le=1_000_000, description="Signals the whole "
                                  "bot records in an hour (all customers); beyond, none until "
                                  "the hour has passed.")
    keep_days: float = Field(180.0, gt=0, le=3650, description="Signals older than this no "
                             "longer count; learnt phrasings stay while their signals do.")
