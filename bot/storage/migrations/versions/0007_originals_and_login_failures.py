"""Customers' messages as written (before PII redaction), kept for a bounded time for the
operator holding the conversation; failed operator sign-ins by digest of (name, address) and of
address, shared by every worker and kept across restarts.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "originals",
        sa.Column("message_id", sa.Integer, sa.ForeignKey("messages.id"), primary_key=True),
        sa.Column("conversation_id", sa.String(128), nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_originals_conversation_id", "originals", ["conversation_id"])
    op.create_index("ix_originals_expires_at", "originals", ["expires_at"])
    op.create_table(
        "login_failures",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("failures", sa.Integer, nullable=False),
        sa.Column("last_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("login_failures")
    op.drop_index("ix_originals_expires_at", table_name="originals")
    op.drop_index("ix_originals_conversation_id", table_name="originals")
    op.drop_table("originals")
