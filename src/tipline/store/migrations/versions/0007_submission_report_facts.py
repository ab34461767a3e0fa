"""Submission and decision facts that CyberTipline reports need.

Submissions: upload source port, file name, uploader screen name and profile URL, and
account facts (IP events, devices, disabled dates, location). Decisions: what the
reviewer viewed and concluded (viewed flags, classification, annotations).

Revision ID: 0007_submission_report_facts
Revises: 0003_submissions
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_submission_report_facts"
down_revision = "0003_submissions"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the columns (existing rows get empty facts)."""
    with op.batch_alter_table("submissions") as batch:
        batch.add_column(sa.Column("upload_port", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("file_name", sa.Text(), nullable=True))
        batch.add_column(sa.Column("uploader_screen_name", sa.String(length=256), nullable=True))
        batch.add_column(sa.Column("uploader_profile_url", sa.Text(), nullable=True))
        batch.add_column(
            sa.Column("account", sa.JSON(), nullable=False, server_default=sa.text("'{}'"))
        )
    with op.batch_alter_table("decisions") as batch:
        batch.add_column(
            sa.Column("facts", sa.JSON(), nullable=False, server_default=sa.text("'{}'"))
        )


def downgrade() -> None:
    """Drop the columns."""
    with op.batch_alter_table("decisions") as batch:
        batch.drop_column("facts")
    with op.batch_alter_table("submissions") as batch:
        batch.drop_column("account")
        batch.drop_column("uploader_profile_url")
        batch.drop_column("uploader_screen_name")
        batch.drop_column("file_name")
        batch.drop_column("upload_port")
