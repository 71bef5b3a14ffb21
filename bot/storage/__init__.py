"""Storage: conversations, messages, ratings and turn locks in any SQLAlchemy database.

engine (connection, URL, errors), schema (migrations), locks (turn locks), conversations (the
store), feedback (ratings), privacy (texts as written, erasure), values (what may be stored),
models (the tables), migrations/ (Alembic's scripts).
"""

from __future__ import annotations

from bot.storage.conversations import ConversationStore
from bot.storage.engine import mask_url
from bot.storage.locks import LOCK_CONNECTIONS
from bot.storage.models import Base, Conversation, Feedback, Message
from bot.storage.schema import upgrade

__all__ = ["LOCK_CONNECTIONS", "Base", "Conversation", "ConversationStore", "Feedback",
           "Message", "mask_url", "upgrade"]
