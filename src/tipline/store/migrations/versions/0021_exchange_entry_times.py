"""Hash exchanges: the source time of the newest event applied per entry (out-of-order
sources such as NCMEC).

Revision ID: 0021_exchange_entry_times
Revises: 0020_exchanges
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0021_exchange_entry_times"
down_revision = "0020_exchanges"
branch_labels = None
depends_on = None

_BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Create the exchange_entry_times table."""
    op.create_table(
        "exchange_entry_times",
        sa.Column(
            "exchange_id",
            _BigId,
            sa.ForeignKey(
                "exchanges.id",
                name="fk_exchange_entry_times_exchange_id_exchanges",
                ondelete="CASCADE",
            ),
            nullable=False,
        ),
        sa.Column("entry_id", sa.String(200), nullable=False),
        sa.Column("ts", sa.BigInteger(), nullable=False),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("bank", sa.String(200), nullable=False),
        sa.PrimaryKeyConstraint("exchange_id", "entry_id", name="pk_exchange_entry_times"),
    )


def downgrade() -> None:
    """Drop the exchange_entry_times table."""
    op.drop_table("exchange_entry_times")
