"""FAQ phrasings and entries operators teach the bot from the inbox; operators' sessions
ended at logout, and failed logins counted in the database (shared by every worker); how long
each claimed conversation had waited (the expected wait customers are told).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("operators") as batch:
        batch.add_column(sa.Column("sessions_after", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("failed_logins", sa.Integer, nullable=False,
                                   server_default="0"))
        batch.add_column(sa.Column("last_failed_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("operator_actions") as batch:
        batch.add_column(sa.Column("waited_seconds", sa.Float, nullable=True))
    op.create_table(
        "faq_additions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("entry_id", sa.String(128), nullable=False),
        sa.Column("question", sa.Text, nullable=False),
        sa.Column("answer", sa.Text, nullable=True),
        sa.Column("operator", sa.String(64), nullable=False),
        sa.Column("conversation_id", sa.String(128), nullable=True),
        sa.Column("message_id", sa.Integer, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("removed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("removed_by", sa.String(64), nullable=True),
    )
    op.create_index("ix_faq_additions_entry_id", "faq_additions", ["entry_id"])


def downgrade() -> None:
    op.drop_index("ix_faq_additions_entry_id", table_name="faq_additions")
    op.drop_table("faq_additions")
    with op.batch_alter_table("operator_actions") as batch:
        batch.drop_column("waited_seconds")
    with op.batch_alter_table("operators") as batch:
        batch.drop_column("last_failed_at")
        batch.drop_column("failed_logins")
        batch.drop_column("sessions_after")
