"""Evidence vault: preserved items (encrypted files on disk) and legal holds.

Revision ID: 0005_vault
Revises:
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from tipline.store.base import UTCDateTime

revision = "0005_vault"
down_revision = None
branch_labels = ("vault",)
depends_on = None


def upgrade() -> None:
    """Create vault_items and vault_holds."""
    op.create_table(
        "vault_items",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=True),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("media_type", sa.String(length=128), nullable=True),
        sa.Column("filename", sa.String(length=256), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("blob_sha256", sa.String(length=64), nullable=False),
        sa.Column("blob_size", sa.BigInteger(), nullable=False),
        sa.Column("format_version", sa.Integer(), nullable=False),
        sa.Column("chunk_size", sa.Integer(), nullable=False),
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.Column("wrapped_key", sa.LargeBinary(), nullable=True),
        sa.Column("submission_id", sa.String(length=26), nullable=True),
        sa.Column("review_item_id", sa.String(length=26), nullable=True),
        sa.Column("report_id", sa.String(length=64), nullable=True),
        sa.Column("content_id", sa.String(length=256), nullable=True),
        sa.Column("meta", sa.JSON(), nullable=False),
        sa.Column("stored_at", UTCDateTime(), nullable=False),
        sa.Column("stored_by", sa.String(length=64), nullable=False),
        sa.Column("reported_at", UTCDateTime(), nullable=True),
        sa.Column("retain_until", UTCDateTime(), nullable=False),
        sa.Column("purged_at", UTCDateTime(), nullable=True),
        sa.Column("purged_by", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_vault_items")),
    )
    for column in ("tenant", "sha256", "key_id", "submission_id", "review_item_id", "report_id"):
        op.create_index(op.f(f"ix_vault_items_{column}"), "vault_items", [column])
    op.create_index("ix_vault_items_purged_retain", "vault_items", ["purged_at", "retain_until"])
    op.create_table(
        "vault_holds",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("item_id", sa.String(length=26), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("placed_at", UTCDateTime(), nullable=False),
        sa.Column("placed_by", sa.String(length=64), nullable=False),
        sa.Column("released_at", UTCDateTime(), nullable=True),
        sa.Column("released_by", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(
            ["item_id"], ["vault_items.id"], name=op.f("fk_vault_holds_item_id_vault_items")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_vault_holds")),
    )
    op.create_index(op.f("ix_vault_holds_item_id"), "vault_holds", ["item_id"])


def downgrade() -> None:
    """Drop the vault tables (the encrypted files stay on disk)."""
    op.drop_index(op.f("ix_vault_holds_item_id"), table_name="vault_holds")
    op.drop_table("vault_holds")
    op.drop_index("ix_vault_items_purged_retain", table_name="vault_items")
    for column in ("tenant", "sha256", "key_id", "submission_id", "review_item_id", "report_id"):
        op.drop_index(op.f(f"ix_vault_items_{column}"), table_name="vault_items")
    op.drop_table("vault_items")
