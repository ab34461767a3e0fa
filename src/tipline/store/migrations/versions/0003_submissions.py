"""Submissions, match history and decisions.

Revision ID: 0003_submissions
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from tipline.store.base import UTCDateTime

revision = "0003_submissions"
down_revision = None
branch_labels = ("submissions",)
depends_on = None

_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Create submissions, match_history and decisions."""
    op.create_table(
        "submissions",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=True),
        sa.Column("content_id", sa.String(length=256), nullable=False),
        sa.Column("uploader_account", sa.String(length=256), nullable=True),
        sa.Column("upload_ip", sa.String(length=64), nullable=True),
        sa.Column("uploaded_at", UTCDateTime(), nullable=True),
        sa.Column("metadata", sa.JSON(), nullable=False),
        sa.Column("signals", sa.JSON(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_submissions")),
    )
    op.create_index(op.f("ix_submissions_tenant"), "submissions", ["tenant"])
    op.create_index("ix_submissions_tenant_content", "submissions", ["tenant", "content_id"])
    op.create_table(
        "match_history",
        sa.Column("id", _BIG_ID, autoincrement=True, nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=True),
        sa.Column("submission_id", sa.String(length=26), nullable=True),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("bank", sa.String(length=200), nullable=False),
        sa.Column("entry_id", sa.String(length=200), nullable=False),
        sa.Column("signal_type", sa.String(length=40), nullable=False),
        sa.Column("distance", sa.Integer(), nullable=False),
        sa.Column("query_value", sa.Text(), nullable=True),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["submission_id"],
            ["submissions.id"],
            name=op.f("fk_match_history_submission_id_submissions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_match_history")),
    )
    op.create_index(op.f("ix_match_history_tenant"), "match_history", ["tenant"])
    op.create_index(op.f("ix_match_history_submission_id"), "match_history", ["submission_id"])
    op.create_table(
        "decisions",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=True),
        sa.Column("submission_id", sa.String(length=26), nullable=False),
        sa.Column("decision", sa.String(length=32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("decided_by", sa.String(length=64), nullable=False),
        sa.Column("decided_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["submission_id"],
            ["submissions.id"],
            name=op.f("fk_decisions_submission_id_submissions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_decisions")),
    )
    op.create_index(op.f("ix_decisions_tenant"), "decisions", ["tenant"])
    op.create_index(op.f("ix_decisions_submission_id"), "decisions", ["submission_id"])


def downgrade() -> None:
    """Drop the three tables."""
    op.drop_table("decisions")
    op.drop_table("match_history")
    op.drop_table("submissions")
