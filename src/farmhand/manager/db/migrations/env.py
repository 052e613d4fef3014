"""Alembic environment: run by `farmhand.manager.db.migrate.upgrade`, never by hand.

The connection comes from the caller through `config.attributes`, so the manager's own
engine (with its SQLite settings) is the one that migrates.
"""

from alembic import context

from farmhand.manager.db.models import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
