"""Imports every model module so that Base.metadata is complete (for Alembic and tests)."""

from __future__ import annotations

import importlib

#: model modules under tipline.store; add new ones here
MODEL_MODULES: tuple[str, ...] = (
    "bank_tables",
    "audit",
    "auth",
    "jobs",
    "scans",
    "submissions",
    "vault",
    "reports",
    "report_bundles",
    "clearinghouse",
    "referrals",
    "exchanges",
    "clearinghouse_triage",
    "web",
)


def import_all_models() -> None:
    """Import every model module listed in :data:`MODEL_MODULES`."""
    for name in MODEL_MODULES:
        importlib.import_module(f"tipline.store.{name}")
