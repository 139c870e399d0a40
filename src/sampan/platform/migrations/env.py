"""Alembic's environment: run by sampan.platform.db.migrate with a connection it opened."""

from __future__ import annotations

from alembic import context

from sampan.platform.schema import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("Run migrations through sampan.platform.db.migrate(), which connects.")
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=True,  # SQLite alters tables by copying them
)
with context.begin_transaction():
    context.run_migrations()
