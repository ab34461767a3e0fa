"""Match-time viral bundles: auto-reports held open to collect their cluster's uploads.

Revision ID: 0036_report_bundles
Revises: 0030_bank_auto_report (depends on 0006_reports)
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from tipline.store.base import UTCDateTime

revision = "0036_report_bundles"
down_revision = "0030_bank_auto_report"
branch_labels = None
depends_on = ("0006_reports",)  # the table it refers to (another branch)


def upgrade() -> None:
    """Create report_bundles."""
    op.create_table(
        "report_bundles",
        sa.Column("report_id", sa.String(26), nullable=False),
        sa.Column("tenant", sa.String(64), nullable=True),
        sa.Column("pdq", sa.String(64), nullable=False),
        sa.Column("first_at", UTCDateTime(), nullable=False),
        sa.Column("hold_until", UTCDateTime(), nullable=False),
        sa.Column("released_at", UTCDateTime(), nullable=True),
        sa.Column("viral", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["report_id"],
            ["reports.id"],
            name="fk_report_bundles_report_id_reports",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("report_id", name="pk_report_bundles"),
    )
    op.create_index("ix_report_bundles_tenant_first_at", "report_bundles", ["tenant", "first_at"])
    op.create_index("ix_report_bundles_hold_until", "report_bundles", ["hold_until"])


def downgrade() -> None:
    """Drop report_bundles."""
    op.drop_index("ix_report_bundles_hold_until", table_name="report_bundles")
    op.drop_index("ix_report_bundles_tenant_first_at", table_name="report_bundles")
    op.drop_table("report_bundles")
