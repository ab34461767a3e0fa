"""HMA content fields on bank entries: a note, user metadata, a disable-until time.

Revision ID: 0012_hma_content
Revises: 0001_banks
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012_hma_content"
down_revision = "0001_banks"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the three nullable columns (existing entries keep NULL: no note, no metadata,
    disabled - if at all - without an end)."""
    with op.batch_alter_table("bank_entries") as batch:
        batch.add_column(sa.Column("note", sa.Text(), nullable=True))
        batch.add_column(sa.Column("content_metadata", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("disable_until", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    """Drop the columns."""
    with op.batch_alter_table("bank_entries") as batch:
        batch.drop_column("disable_until")
        batch.drop_column("content_metadata")
        batch.drop_column("note")
