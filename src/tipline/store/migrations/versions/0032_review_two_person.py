"""Review: first confirmations waiting for a second reviewer (the two-person rule).

Revision ID: 0032_review_two_person
Revises: 0011_web
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from tipline.store.base import UTCDateTime

revision = "0032_review_two_person"
down_revision = "0011_web"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create review_first_confirmations."""
    op.create_table(
        "review_first_confirmations",
        sa.Column("item_id", sa.String(26), nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("tenant", sa.String(64), nullable=True),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("facts", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("item_id", name="pk_review_first_confirmations"),
    )


def downgrade() -> None:
    """Drop review_first_confirmations."""
    op.drop_table("review_first_confirmations")
