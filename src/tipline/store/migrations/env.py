"""Alembic environment: runs on the connection handed in by tipline.store.db.upgrade."""

from __future__ import annotations

from alembic import context

from tipline.store.base import Base
from tipline.store.models import import_all_models

import_all_models()
connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `tipline db upgrade`")
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
