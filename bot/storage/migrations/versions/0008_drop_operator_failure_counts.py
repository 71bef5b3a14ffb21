"""Drop operators.failed_logins and operators.last_failed_at: failed sign-ins are counted by
digest of (name, address) and of address in login_failures since 0007; nothing reads these.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("operators") as batch:
        batch.drop_column("last_failed_at")
        batch.drop_column("failed_logins")


def downgrade() -> None:
    with op.batch_alter_table("operators") as batch:
        batch.add_column(sa.Column("failed_logins", sa.Integer, nullable=False,
                                   server_default="0"))
        batch.add_column(sa.Column("last_failed_at", sa.DateTime(timezone=True), nullable=True))
