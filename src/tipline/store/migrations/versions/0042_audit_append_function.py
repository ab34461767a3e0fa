"""The audit append of one record in one round trip on PostgreSQL: a function that
locks the chain head, chains and inserts the record and moves the head
(:mod:`tipline.services.audit`).

The client sends the record's canonical document in two pieces, before ``prev_hash``
and after ``seq`` (which only the locked head knows); the function joins them and
hashes them with ``sha256``, so the stored hash is byte for byte what
``record_hash`` (and ``tipline audit verify``) computes. Scalar arguments: arrays cost
the client more CPU to send than the second round trip they would save, so several
records keep the two-statement append. Nothing changes on SQLite.

Revision ID: 0042_audit_append_function
Revises: 0002_service
Create Date: 2026-11-30
"""

from __future__ import annotations

from alembic import op

revision = "0042_audit_append_function"
down_revision = "0002_service"
branch_labels = None
depends_on = None

FUNCTION = r"""
CREATE OR REPLACE FUNCTION tipline_audit_append_one(
    p_at timestamptz,
    p_head text,
    p_tail text,
    p_actor text,
    p_tenant text,
    p_action text,
    p_target_type text,
    p_target_id text,
    p_details text
) RETURNS TABLE (out_seq bigint, out_prev_hash text, out_hash text)
LANGUAGE plpgsql AS $fn$
DECLARE
    s bigint;
    h text;
BEGIN
    UPDATE audit_head AS ah SET seq = ah.seq + 1 WHERE ah.id = 1
        RETURNING ah.seq, ah.hash INTO s, h;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'audit chain head is missing; run `tipline audit verify`'
            USING ERRCODE = 'P0002';
    END IF;
    out_seq := s;
    out_prev_hash := h;
    h := encode(sha256(convert_to(p_head || h || '","seq":' || s::text || p_tail, 'UTF8')),
                'hex');
    out_hash := h;
    INSERT INTO audit_log (seq, at, actor, tenant, action, target_type, target_id,
                           details, prev_hash, hash)
    VALUES (s, p_at, p_actor, p_tenant, p_action, p_target_type, p_target_id, p_details,
            out_prev_hash, h);
    UPDATE audit_head AS ah SET hash = h WHERE ah.id = 1;
    RETURN NEXT;
END
$fn$
"""


def upgrade() -> None:
    """Create tipline_audit_append_one (PostgreSQL only)."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute(FUNCTION)


def downgrade() -> None:
    """Drop it."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "DROP FUNCTION IF EXISTS tipline_audit_append_one("
            "timestamptz, text, text, text, text, text, text, text, text)"
        )
