"""The dialogue core: a customer's message in, verified text and one reply out.

manager.py holds DialogueManager and its streaming contract, policy.py the decision,
generated.py the generated band, replies.py the other replies, search.py a turn's retrieval,
persistence.py storing a turn, turn.py what a turn is made of.
"""

from __future__ import annotations

from bot.dialogue.manager import DialogueManager
from bot.dialogue.turn import Event, TokenSink, normalise

__all__ = ["DialogueManager", "Event", "TokenSink", "normalise"]
