"""The per-bank auto-report policy (``default``: the settings' ``report_auto_banks``).

Revision ID: 0030_bank_auto_report
Revises: 0034_bank_regions
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0030_bank_auto_report"
down_revision = "0034_bank_regions"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add banks.auto_report (``default`` for existing banks: behaviour unchanged)."""
    with op.batch_alter_table("banks") as batch:
        batch.add_column(
            sa.Column("auto_report", sa.String(16), nullable=False, server_default="default")
        )


def downgrade() -> None:
    """Drop banks.auto_report."""
    with op.batch_alter_table("banks") as batch:
        batch.drop_column("auto_report")
