"""CyberTipline reports, report files, delivery outbox, step log, operator queue.

Revision ID: 0006_reports
Revises:
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from tipline.store.base import UTCDateTime

revision = "0006_reports"
down_revision = None
branch_labels = ("reports",)
depends_on = None

_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Create the five report tables."""
    op.create_table(
        "reports",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("source", sa.String(length=128), nullable=False),
        sa.Column("xml", sa.Text(), nullable=False),
        sa.Column("xml_sha256", sa.String(length=64), nullable=False),
        sa.Column("remote_id", _BIG_ID, nullable=True),
        sa.Column("orphans", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.Column("retracted_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reports")),
    )
    op.create_index(op.f("ix_reports_tenant"), "reports", ["tenant"])
    op.create_index(op.f("ix_reports_source"), "reports", ["source"])
    op.create_index("ix_reports_tenant_status", "reports", ["tenant", "status"])
    op.create_table(
        "report_files",
        sa.Column("report_id", sa.String(length=26), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("submission_id", sa.String(length=26), nullable=True),
        sa.Column("evidence_id", sa.String(length=128), nullable=False),
        sa.Column("file_name", sa.Text(), nullable=False),
        sa.Column("size", _BIG_ID, nullable=False),
        sa.Column("md5", sa.String(length=32), nullable=False),
        sa.Column("sha1", sa.String(length=40), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("remote_file_id", sa.String(length=128), nullable=True),
        sa.Column("described", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["report_id"],
            ["reports.id"],
            name=op.f("fk_report_files_report_id_reports"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("report_id", "seq", name=op.f("pk_report_files")),
    )
    op.create_index(op.f("ix_report_files_submission_id"), "report_files", ["submission_id"])
    op.create_table(
        "report_outbox",
        sa.Column("report_id", sa.String(length=26), nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=True),
        sa.Column("step", sa.String(length=16), nullable=False),
        sa.Column("file_seq", sa.Integer(), nullable=False),
        sa.Column("inflight", sa.Boolean(), nullable=False),
        sa.Column("final_retract", sa.Boolean(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_at", UTCDateTime(), nullable=False),
        sa.Column("lease_owner", sa.String(length=128), nullable=True),
        sa.Column("lease_expires_at", UTCDateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["report_id"],
            ["reports.id"],
            name=op.f("fk_report_outbox_report_id_reports"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("report_id", name=op.f("pk_report_outbox")),
    )
    op.create_index("ix_report_outbox_next_at", "report_outbox", ["next_at"])
    op.create_table(
        "report_events",
        sa.Column("id", _BIG_ID, autoincrement=True, nullable=False),
        sa.Column("report_id", sa.String(length=26), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("step", sa.String(length=16), nullable=False),
        sa.Column("phase", sa.String(length=16), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["report_id"],
            ["reports.id"],
            name=op.f("fk_report_events_report_id_reports"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_report_events")),
    )
    op.create_index(op.f("ix_report_events_report_id"), "report_events", ["report_id"])
    op.create_table(
        "report_operator_queue",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("report_id", sa.String(length=26), nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=True),
        sa.Column("step", sa.String(length=16), nullable=False),
        sa.Column("file_seq", sa.Integer(), nullable=False),
        sa.Column("response_code", sa.Integer(), nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("resolved_at", UTCDateTime(), nullable=True),
        sa.Column("resolved_by", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(
            ["report_id"],
            ["reports.id"],
            name=op.f("fk_report_operator_queue_report_id_reports"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_report_operator_queue")),
    )
    op.create_index(
        op.f("ix_report_operator_queue_report_id"), "report_operator_queue", ["report_id"]
    )
    op.create_index(op.f("ix_report_operator_queue_tenant"), "report_operator_queue", ["tenant"])


def downgrade() -> None:
    """Drop the report tables."""
    op.drop_table("report_operator_queue")
    op.drop_table("report_events")
    op.drop_table("report_outbox")
    op.drop_table("report_files")
    op.drop_table("reports")
