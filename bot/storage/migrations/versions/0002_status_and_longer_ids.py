"""Conversation status for human handoff (status, status_changed_at); ids up to 128 characters.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Batch mode: SQLite cannot alter a column's type in place, so the table is copied.
    with op.batch_alter_table("conversations") as batch:
        batch.add_column(sa.Column("status", sa.String(16), nullable=False,
                                   server_default="bot"))  # existing conversations: the bot's
        batch.add_column(sa.Column("status_changed_at", sa.DateTime(timezone=True),
                                   nullable=True))
        batch.alter_column("id", type_=sa.String(128), existing_type=sa.String(64),
                           existing_nullable=False)
    with op.batch_alter_table("messages") as batch:
        batch.alter_column("conversation_id", type_=sa.String(128),
                           existing_type=sa.String(64), existing_nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.alter_column("conversation_id", type_=sa.String(64),
                           existing_type=sa.String(128), existing_nullable=False)
    with op.batch_alter_table("conversations") as batch:
        batch.alter_column("id", type_=sa.String(64), existing_type=sa.String(128),
                           existing_nullable=False)
        batch.drop_column("status_changed_at")
        batch.drop_column("status")
