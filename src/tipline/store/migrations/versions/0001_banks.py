"""Banks, bank entries, entry signals and the change-sequence counter.

Revision ID: 0001_banks
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from alembic import op

from tipline.store.base import UTCDateTime

revision = "0001_banks"
down_revision = None
branch_labels = ("banks",)
depends_on = None

_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Create the bank tables and the single counter row."""
    state = op.create_table(
        "bank_state",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("instance", sa.String(length=36), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bank_state")),
    )
    op.bulk_insert(state, [{"id": 1, "seq": 0, "instance": str(uuid.uuid4())}])
    op.create_table(
        "banks",
        sa.Column("id", _BIG_ID, autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("is_allow_bank", sa.Boolean(), nullable=False),
        sa.Column("thresholds", sa.JSON(), nullable=False),
        sa.Column("tenant", sa.String(length=200), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_banks")),
        sa.UniqueConstraint("name", name=op.f("uq_banks_name")),
    )
    op.create_index(op.f("ix_banks_tenant"), "banks", ["tenant"], unique=False)
    op.create_table(
        "bank_entries",
        sa.Column("id", _BIG_ID, autoincrement=True, nullable=False),
        sa.Column("bank_id", _BIG_ID, nullable=False),
        sa.Column("entry_id", sa.String(length=200), nullable=False),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("source", sa.Text(), nullable=True),
        sa.Column("added_at", UTCDateTime(), nullable=False),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        sa.Column("disabled_reason", sa.Text(), nullable=True),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["bank_id"],
            ["banks.id"],
            name=op.f("fk_bank_entries_bank_id_banks"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bank_entries")),
        sa.UniqueConstraint("bank_id", "entry_id", name="uq_bank_entries_bank_id_entry_id"),
    )
    op.create_index(op.f("ix_bank_entries_seq"), "bank_entries", ["seq"], unique=False)
    op.create_table(
        "bank_signals",
        sa.Column("id", _BIG_ID, autoincrement=True, nullable=False),
        sa.Column("entry_pk", _BIG_ID, nullable=False),
        sa.Column("type", sa.String(length=40), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["entry_pk"],
            ["bank_entries.id"],
            name=op.f("fk_bank_signals_entry_pk_bank_entries"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bank_signals")),
    )
    op.create_index(op.f("ix_bank_signals_entry_pk"), "bank_signals", ["entry_pk"], unique=False)
    op.create_index("ix_bank_signals_seq", "bank_signals", ["seq"], unique=False)


def downgrade() -> None:
    """Drop the bank tables."""
    op.drop_table("bank_signals")
    op.drop_table("bank_entries")
    op.drop_table("banks")
    op.drop_table("bank_state")
