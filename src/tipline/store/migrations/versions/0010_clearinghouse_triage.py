"""Clearinghouse de-duplication, clusters, report links and triage.

Revision ID: 0010_clearinghouse_triage
Revises: 0008_clearinghouse_intake
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from tipline.store.base import UTCDateTime

revision = "0010_clearinghouse_triage"
down_revision = "0008_clearinghouse_intake"
branch_labels = None
depends_on = None

_BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Create the tables and the state row."""
    state = op.create_table(
        "clearinghouse_state",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("runs", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_clearinghouse_state"),
    )
    op.bulk_insert(state, [{"id": 1, "runs": 0}])
    op.create_table(
        "intake_clusters",
        sa.Column("id", _BigId, autoincrement=True, nullable=False),
        sa.Column("first_file_id", sa.String(32), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("merged_into", _BigId, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_intake_clusters"),
    )
    op.create_table(
        "intake_file_dedup",
        sa.Column(
            "file_id",
            sa.String(32),
            sa.ForeignKey("intake_files.id", name="fk_intake_file_dedup_file_id_intake_files"),
            nullable=False,
        ),
        sa.Column("report_id", _BigId, nullable=False),
        sa.Column("cluster_id", _BigId, nullable=False),
        sa.Column("state", sa.String(8), nullable=False),
        sa.Column("known", sa.JSON(), nullable=False),
        sa.Column("indexed", sa.Boolean(), nullable=False),
        sa.Column("published", sa.Boolean(), nullable=False),
        sa.Column("processed_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("file_id", name="pk_intake_file_dedup"),
    )
    op.create_index("ix_intake_file_dedup_report_id", "intake_file_dedup", ["report_id"])
    op.create_index("ix_intake_file_dedup_cluster_id", "intake_file_dedup", ["cluster_id"])
    op.create_table(
        "intake_file_links",
        sa.Column("id", _BigId, autoincrement=True, nullable=False),
        sa.Column("file_id", sa.String(32), nullable=False),
        sa.Column("other_file_id", sa.String(32), nullable=False),
        sa.Column("signal", sa.String(40), nullable=False),
        sa.Column("distance", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_intake_file_links"),
    )
    op.create_index("ix_intake_file_links_file_id", "intake_file_links", ["file_id"])
    op.create_index("ix_intake_file_links_other_file_id", "intake_file_links", ["other_file_id"])
    op.create_table(
        "intake_report_identifiers",
        sa.Column("id", _BigId, autoincrement=True, nullable=False),
        sa.Column("report_id", _BigId, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("scope", sa.String(26), nullable=False),
        sa.Column("value", sa.String(512), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_intake_report_identifiers"),
    )
    op.create_index(
        "ix_intake_report_identifiers_report_id", "intake_report_identifiers", ["report_id"]
    )
    op.create_index(
        "ix_intake_report_identifiers_key", "intake_report_identifiers", ["kind", "scope", "value"]
    )
    op.create_table(
        "intake_triage",
        sa.Column(
            "report_id",
            _BigId,
            sa.ForeignKey("intake_reports.id", name="fk_intake_triage_report_id_intake_reports"),
            nullable=False,
        ),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("factors", sa.JSON(), nullable=False),
        sa.Column("files", sa.Integer(), nullable=False),
        sa.Column("new_files", sa.Integer(), nullable=False),
        sa.Column("known_files", sa.Integer(), nullable=False),
        sa.Column("linked_reports", sa.Integer(), nullable=False),
        sa.Column("triaged_at", UTCDateTime(), nullable=False),
        sa.Column("decided_at", UTCDateTime(), nullable=True),
        sa.Column("decided_by", sa.String(64), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("report_id", name="pk_intake_triage"),
    )
    op.create_index("ix_intake_triage_status_score", "intake_triage", ["status", "score"])


def downgrade() -> None:
    """Drop the tables."""
    op.drop_table("intake_triage")
    op.drop_table("intake_report_identifiers")
    op.drop_table("intake_file_links")
    op.drop_table("intake_file_dedup")
    op.drop_table("intake_clusters")
    op.drop_table("clearinghouse_state")
