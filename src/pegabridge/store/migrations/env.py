"""Alembic environment: migrations run on a connection handed in by pegabridge."""

from __future__ import annotations

from alembic import context

from pegabridge.store.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "pegabridge migrations run through `pegabridge migrate`, not alembic"
    )

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
