"""api_keys: quotas counted in requests or task units, optionally for one model pattern

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as table:
        table.add_column(
            sa.Column("quota_units", sa.String(16), nullable=False, server_default="requests")
        )
        table.add_column(sa.Column("quota_model", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as table:
        table.drop_column("quota_model")
        table.drop_column("quota_units")
