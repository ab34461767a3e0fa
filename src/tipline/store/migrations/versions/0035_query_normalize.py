"""Robust matching, query side: a per-bank switch for matching normalised query
variants (on by default) and the variant each recorded match came from.

Revision ID: 0035_query_normalize
Revises: 0012_hma_content
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0035_query_normalize"
down_revision = "0012_hma_content"
branch_labels = None
depends_on = "0003_submissions"  # match_history


def upgrade() -> None:
    """Add banks.normalize and match_history.variant."""
    with op.batch_alter_table("banks") as batch:
        batch.add_column(
            sa.Column("normalize", sa.Boolean(), nullable=False, server_default=sa.true())
        )
    with op.batch_alter_table("match_history") as batch:
        batch.add_column(sa.Column("variant", sa.String(40), nullable=True))


def downgrade() -> None:
    """Drop the two columns."""
    with op.batch_alter_table("match_history") as batch:
        batch.drop_column("variant")
    with op.batch_alter_table("banks") as batch:
        batch.drop_column("normalize")
