"""Scans, their batch checkpoints and per-item results.

Revision ID: 0004_scans
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from tipline.store.base import UTCDateTime

revision = "0004_scans"
down_revision = None
branch_labels = ("scans",)
depends_on = None

_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Create scans, scan_batches and scan_items."""
    op.create_table(
        "scans",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("runner", sa.String(length=16), nullable=False),
        sa.Column("sources", sa.JSON(), nullable=False),
        sa.Column("options", sa.JSON(), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=True),
        sa.Column("pids", sa.JSON(), nullable=False),
        sa.Column("total_items", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_scans")),
    )
    op.create_table(
        "scan_batches",
        sa.Column("scan_id", sa.String(length=26), nullable=False),
        sa.Column("batch_no", sa.Integer(), nullable=False),
        sa.Column("items", sa.Integer(), nullable=False),
        sa.Column("matched", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.Column("hash_seconds", sa.Float(), nullable=False),
        sa.Column("worker", sa.String(length=255), nullable=False),
        sa.Column("committed_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["scan_id"],
            ["scans.id"],
            name=op.f("fk_scan_batches_scan_id_scans"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("scan_id", "batch_no", name=op.f("pk_scan_batches")),
    )
    op.create_table(
        "scan_items",
        sa.Column("id", _BIG_ID, autoincrement=True, nullable=False),
        sa.Column("scan_id", sa.String(length=26), nullable=False),
        sa.Column("content_key", sa.String(length=64), nullable=False),
        sa.Column("content_id", sa.Text(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column("batch_no", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=8), nullable=False),
        sa.Column("media", sa.String(length=16), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=True),
        sa.Column("signals", sa.JSON(), nullable=False),
        sa.Column("matches", sa.JSON(), nullable=False),
        sa.Column("error_code", sa.String(length=64), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("scanned_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["scan_id"],
            ["scans.id"],
            name=op.f("fk_scan_items_scan_id_scans"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_scan_items")),
    )
    op.create_index("uq_scan_items_scan_key", "scan_items", ["scan_id", "content_key"], unique=True)
    op.create_index("ix_scan_items_scan_position", "scan_items", ["scan_id", "position"])


def downgrade() -> None:
    """Drop the scan tables."""
    op.drop_index("ix_scan_items_scan_position", table_name="scan_items")
    op.drop_index("uq_scan_items_scan_key", table_name="scan_items")
    op.drop_table("scan_items")
    op.drop_table("scan_batches")
    op.drop_table("scans")
