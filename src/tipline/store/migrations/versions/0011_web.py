"""Web UI: password users, server-side sessions, review leases and reveals.

Revision ID: 0011_web
Revises:
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from tipline.store.base import UTCDateTime

revision = "0011_web"
down_revision = None
branch_labels = ("web",)
depends_on = None

_BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Create web_users, web_sessions, review_leases and review_reveals."""
    op.create_table(
        "web_users",
        sa.Column("id", sa.String(26), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("password_hash", sa.String(256), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("tenant", sa.String(64), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("prefs", sa.JSON(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("password_changed_at", UTCDateTime(), nullable=False),
        sa.Column("disabled_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_web_users"),
        sa.UniqueConstraint("name", name="uq_web_users_name"),
    )
    op.create_index("ix_web_users_tenant", "web_users", ["tenant"])
    op.create_table(
        "web_sessions",
        sa.Column("token_sha256", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(26), nullable=False),
        sa.Column("secret", sa.String(64), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("last_seen_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("ended_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("token_sha256", name="pk_web_sessions"),
    )
    op.create_index("ix_web_sessions_user_id", "web_sessions", ["user_id"])
    op.create_table(
        "review_leases",
        sa.Column("item_id", sa.String(26), nullable=False),
        sa.Column("holder", sa.String(64), nullable=True),
        sa.Column("expires_at", UTCDateTime(), nullable=True),
        sa.Column("escalated_at", UTCDateTime(), nullable=True),
        sa.Column("escalated_by", sa.String(64), nullable=True),
        sa.Column("escalation_note", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("item_id", name="pk_review_leases"),
    )
    op.create_table(
        "review_reveals",
        sa.Column("id", _BigId, autoincrement=True, nullable=False),
        sa.Column("item_id", sa.String(26), nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("tenant", sa.String(64), nullable=True),
        sa.Column("level", sa.Integer(), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_review_reveals"),
    )
    op.create_index("ix_review_reveals_item_id", "review_reveals", ["item_id"])
    op.create_index("ix_review_reveals_actor_at", "review_reveals", ["actor", "at"])


def downgrade() -> None:
    """Drop the web tables."""
    op.drop_table("review_reveals")
    op.drop_table("review_leases")
    op.drop_table("web_sessions")
    op.drop_table("web_users")
