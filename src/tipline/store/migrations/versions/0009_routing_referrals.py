"""Clearinghouse routing decisions and referral packages; audit records found by target.

Revision ID: 0009_routing_referrals
Revises: 0008_clearinghouse_intake
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from tipline.store.base import UTCDateTime

revision = "0009_routing_referrals"
down_revision = "0008_clearinghouse_intake"
branch_labels = None
depends_on = "0002_service"  # audit_log (its target index)

_BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Create the routing and referral tables."""
    op.create_table(
        "routing_decisions",
        sa.Column("id", sa.String(26), nullable=False),
        sa.Column(
            "report_id",
            _BigId,
            sa.ForeignKey(
                "intake_reports.id", name="fk_routing_decisions_report_id_intake_reports"
            ),
            nullable=False,
        ),
        sa.Column("agency", sa.String(64), nullable=True),
        sa.Column("agency_name", sa.String(256), nullable=True),
        sa.Column("media_allowed", sa.Boolean(), nullable=False),
        sa.Column("rule", sa.String(16), nullable=False),
        sa.Column("rule_key", sa.String(16), nullable=True),
        sa.Column("country", sa.String(2), nullable=True),
        sa.Column("subdivision", sa.String(8), nullable=True),
        sa.Column("ip", sa.String(64), nullable=True),
        sa.Column("explanation", sa.JSON(), nullable=False),
        sa.Column("decided_at", UTCDateTime(), nullable=False),
        sa.Column("decided_by", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_routing_decisions"),
    )
    op.create_index("ix_routing_decisions_report_id", "routing_decisions", ["report_id"])
    op.create_table(
        "referral_packages",
        sa.Column("id", sa.String(26), nullable=False),
        sa.Column(
            "report_id",
            _BigId,
            sa.ForeignKey(
                "intake_reports.id", name="fk_referral_packages_report_id_intake_reports"
            ),
            nullable=False,
        ),
        sa.Column(
            "decision_id",
            sa.String(26),
            sa.ForeignKey(
                "routing_decisions.id",
                name="fk_referral_packages_decision_id_routing_decisions",
            ),
            nullable=False,
        ),
        sa.Column("agency", sa.String(64), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size", _BigId, nullable=False),
        sa.Column("media_files", sa.Integer(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_referral_packages"),
    )
    op.create_index("ix_referral_packages_report_id", "referral_packages", ["report_id"])
    # the chain of custody of a report reads its records by target
    op.create_index("ix_audit_log_target", "audit_log", ["target_type", "target_id"])


def downgrade() -> None:
    """Drop the routing and referral tables and the audit target index."""
    op.drop_index("ix_audit_log_target", table_name="audit_log")
    op.drop_table("referral_packages")
    op.drop_table("routing_decisions")
