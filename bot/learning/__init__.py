"""Learning from use: customers' picks and ratings and operators' answers teach the index new
phrasings of its entries, once enough distinct customers agree (docs/learning.md)."""

from bot.learning.learner import UseLearning
from bot.learning.trust import Learnt, Signal

__all__ = ["Learnt", "Signal", "UseLearning"]
