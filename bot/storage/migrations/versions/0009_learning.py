"""What the bot learns from use: customers' and operators' signals (learning_signals) and
operators' reviews of learnt phrasings (learning_reviews); bot/learning/.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "learning_signals",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("entry_id", sa.String(128), nullable=False),
        sa.Column("wording", sa.Text, nullable=False),
        sa.Column("conversation_id", sa.String(128), nullable=False),
        sa.Column("message_id", sa.Integer, nullable=True),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("channel", sa.String(32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_learning_signals_conversation_id", "learning_signals",
                    ["conversation_id"])
    op.create_index("ix_learning_signals_source", "learning_signals", ["source"])
    op.create_index("ix_learning_signals_created_at", "learning_signals", ["created_at"])
    op.create_table(
        "learning_reviews",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("entry_id", sa.String(128), nullable=False),
        sa.Column("wording", sa.Text, nullable=False),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("operator", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("learning_reviews")
    op.drop_index("ix_learning_signals_created_at", table_name="learning_signals")
    op.drop_index("ix_learning_signals_source", table_name="learning_signals")
    op.drop_index("ix_learning_signals_conversation_id", table_name="learning_signals")
    op.drop_table("learning_signals")
