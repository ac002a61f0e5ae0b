"""Alembic environment: runs Forager's migrations on the connection ``storage.Store`` passes in.

There is no URL configuration and no offline (``--sql``) mode: the store opens the database, takes the
schema lock, and hands its connection over through ``config.attributes["connection"]``.
"""

from alembic import context

from storage.models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("Forager migrations run through storage.Store (forager db upgrade), not alembic")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    # SQLite cannot ALTER most things: batch mode rebuilds the table instead, which needs this on.
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
