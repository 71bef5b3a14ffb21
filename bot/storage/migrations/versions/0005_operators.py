"""Operator accounts, who holds a handed-off conversation, and the operators' action log.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("conversations") as batch:
        batch.add_column(sa.Column("claimed_by", sa.String(64), nullable=True))
        batch.add_column(sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "operators",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "operator_actions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("operator", sa.String(64), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("conversation_id", sa.String(128), nullable=True),
        sa.Column("message_id", sa.Integer, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_operator_actions_operator", "operator_actions", ["operator"])
    op.create_index("ix_operator_actions_conversation_id", "operator_actions",
                    ["conversation_id"])


def downgrade() -> None:
    op.drop_index("ix_operator_actions_conversation_id", table_name="operator_actions")
    op.drop_index("ix_operator_actions_operator", table_name="operator_actions")
    op.drop_table("operator_actions")
    op.drop_table("operators")
    with op.batch_alter_table("conversations") as batch:
        batch.drop_column("claimed_at")
        batch.drop_column("claimed_by")
