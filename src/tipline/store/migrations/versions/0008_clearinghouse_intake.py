"""Clearinghouse intake: reporting providers, their reports and files.

Revision ID: 0008_clearinghouse_intake
Revises: 0007_submission_report_facts
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from tipline.store.base import UTCDateTime

revision = "0008_clearinghouse_intake"
down_revision = "0007_submission_report_facts"
branch_labels = None
depends_on = None

_BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Create the intake tables."""
    op.create_table(
        "intake_providers",
        sa.Column("id", sa.String(26), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("password_hash", sa.String(256), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("disabled_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_intake_providers"),
        sa.UniqueConstraint("name", name="uq_intake_providers_name"),
    )
    op.create_table(
        "intake_reports",
        sa.Column("id", _BigId, autoincrement=True),
        sa.Column(
            "provider_id",
            sa.String(26),
            sa.ForeignKey(
                "intake_providers.id", name="fk_intake_reports_provider_id_intake_providers"
            ),
            nullable=False,
        ),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("xml", sa.Text(), nullable=False),
        sa.Column("xml_sha256", sa.String(64), nullable=False),
        sa.Column("incident_type", sa.String(128), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.Column("retracted_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_intake_reports"),
    )
    op.create_index("ix_intake_reports_provider_id", "intake_reports", ["provider_id"])
    op.create_index("ix_intake_reports_status", "intake_reports", ["status"])
    op.create_table(
        "intake_files",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column(
            "report_id",
            _BigId,
            sa.ForeignKey("intake_reports.id", name="fk_intake_files_report_id_intake_reports"),
            nullable=False,
        ),
        sa.Column("file_name", sa.Text(), nullable=False),
        sa.Column("size", _BigId, nullable=False),
        sa.Column("md5", sa.String(32), nullable=False),
        sa.Column("sha1", sa.String(40), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("media", sa.String(16), nullable=True),
        sa.Column("signals", sa.JSON(), nullable=False),
        sa.Column("hash_error", sa.Text(), nullable=True),
        sa.Column("vault_id", sa.String(26), nullable=False),
        sa.Column("details_xml", sa.Text(), nullable=True),
        sa.Column("uploaded_at", UTCDateTime(), nullable=False),
        sa.Column("described_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_intake_files"),
    )
    op.create_index("ix_intake_files_report_id", "intake_files", ["report_id"])
    op.create_index("ix_intake_files_md5", "intake_files", ["md5"])
    op.create_index("ix_intake_files_sha256", "intake_files", ["sha256"])


def downgrade() -> None:
    """Drop the intake tables."""
    op.drop_table("intake_files")
    op.drop_table("intake_reports")
    op.drop_table("intake_providers")
