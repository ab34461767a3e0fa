"""A change log of the banks table, written by triggers, so a Matcher can tell with
one tiny read that its cached bank list is current (:func:`tipline.store.
bank_repository.change_marks`).

Every statement that inserts, updates or deletes bank rows adds a row to
``bank_list_changes`` in the same transaction (a trigger, so no writer can forget it).
Rows are never deleted, so the row count grows with every committed change and with
nothing else: equal counts mean no bank change committed in between. A count, not
``max(id)``: ids are handed out at insert time, not in commit order. Inserts take no
lock, so bank writers never wait on each other here.

Revision ID: 0044_bank_list_changes
Revises: 0036_report_bundles
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0044_bank_list_changes"
down_revision = "0036_report_bundles"
branch_labels = None
depends_on = None

_PG_FUNCTION = """
CREATE OR REPLACE FUNCTION tipline_bank_list_changed() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    INSERT INTO bank_list_changes DEFAULT VALUES;
    RETURN NULL;
END
$fn$
"""
_PG_TRIGGER = """
CREATE TRIGGER banks_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON banks
FOR EACH STATEMENT EXECUTE FUNCTION tipline_bank_list_changed()
"""
#: SQLite has row triggers only (and no DEFAULT VALUES inside a trigger)
_SQLITE_EVENTS = ("INSERT", "UPDATE", "DELETE")


def upgrade() -> None:
    """Create bank_list_changes and the triggers on banks."""
    op.create_table(
        "bank_list_changes",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_PG_FUNCTION)
        op.execute(_PG_TRIGGER)
        return
    for event in _SQLITE_EVENTS:
        op.execute(
            f"CREATE TRIGGER banks_changed_{event.lower()} AFTER {event} ON banks"
            " BEGIN INSERT INTO bank_list_changes (id) VALUES (NULL); END"
        )


def downgrade() -> None:
    """Drop the triggers and the table."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS banks_changed ON banks")
        op.execute("DROP FUNCTION IF EXISTS tipline_bank_list_changed()")
    else:
        for event in _SQLITE_EVENTS:
            op.execute(f"DROP TRIGGER IF EXISTS banks_changed_{event.lower()}")
    op.drop_table("bank_list_changes")
