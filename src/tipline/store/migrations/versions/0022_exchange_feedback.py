"""Hash exchanges: votes owed to a source about its entries (NCMEC feedback).

Revision ID: 0022_exchange_feedback
Revises: 0021_exchange_entry_times
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from tipline.store.base import UTCDateTime

revision = "0022_exchange_feedback"
down_revision = "0021_exchange_entry_times"
branch_labels = None
depends_on = None

_BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Create the exchange_feedback table."""
    op.create_table(
        "exchange_feedback",
        sa.Column("id", _BigId, autoincrement=True),
        sa.Column(
            "exchange_id",
            _BigId,
            sa.ForeignKey(
                "exchanges.id",
                name="fk_exchange_feedback_exchange_id_exchanges",
                ondelete="CASCADE",
            ),
            nullable=False,
        ),
        sa.Column("entry_id", sa.String(200), nullable=False),
        sa.Column("fingerprint", sa.String(32), nullable=False),
        sa.Column("vote", sa.String(8), nullable=False),
        sa.Column("decision_id", sa.String(26), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("sent_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_exchange_feedback"),
        sa.UniqueConstraint(
            "exchange_id", "entry_id", "fingerprint", "vote", name="uq_exchange_feedback_vote"
        ),
    )
    op.create_index("ix_exchange_feedback_exchange_id", "exchange_feedback", ["exchange_id"])
    op.create_index("ix_exchange_feedback_status", "exchange_feedback", ["status"])


def downgrade() -> None:
    """Drop the exchange_feedback table."""
    op.drop_table("exchange_feedback")
