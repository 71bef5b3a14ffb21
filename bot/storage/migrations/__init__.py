"""Alembic migrations of the conversation schema; ConversationStore.init() upgrades to head."""

from __future__ import annotations

from pathlib import Path

MIGRATIONS_DIR = Path(__file__).resolve().parent
