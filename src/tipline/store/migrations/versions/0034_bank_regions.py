"""Bank-side robust matching: region descriptors of entries added from media, and the
per-bank switch of that tier.

Revision ID: 0034_bank_regions
Revises: 0035_query_normalize
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0034_bank_regions"
down_revision = "0035_query_normalize"
branch_labels = None
depends_on = None

_BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Create bank_regions; add banks.region_matching (on for existing banks)."""
    op.create_table(
        "bank_regions",
        sa.Column("id", _BigId, autoincrement=True),
        sa.Column(
            "entry_pk",
            _BigId,
            sa.ForeignKey(
                "bank_entries.id", name="fk_bank_regions_entry_pk_bank_entries", ondelete="CASCADE"
            ),
            nullable=False,
        ),
        sa.Column("region", sa.String(40), nullable=False),
        sa.Column("value", sa.String(64), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_bank_regions"),
    )
    op.create_index("ix_bank_regions_seq", "bank_regions", ["seq"])
    op.create_index("ix_bank_regions_entry_pk", "bank_regions", ["entry_pk"])
    # a plain ADD COLUMN with a constant default (SQLite and PostgreSQL alike)
    op.add_column(
        "banks",
        sa.Column("region_matching", sa.Boolean(), nullable=False, server_default=sa.true()),
    )


def downgrade() -> None:
    """Drop the column and the table."""
    with op.batch_alter_table("banks") as batch:
        batch.drop_column("region_matching")
    op.drop_index("ix_bank_regions_entry_pk", table_name="bank_regions")
    op.drop_index("ix_bank_regions_seq", table_name="bank_regions")
    op.drop_table("bank_regions")
