"""Alembic environment: runs the issuer's migrations against the URL that
`storage.database.migrate` passes."""

from __future__ import annotations

from alembic import context
from sqlalchemy import engine_from_config, pool, text

config = context.config

# Replicas starting together on one PostgreSQL take turns: the first migrates, the others then
# find the schema at head. (An arbitrary constant naming the issuer's migration lock.)
_PG_MIGRATION_LOCK = 0x61636D65


def run_migrations_online() -> None:
    """Apply migrations over one connection, in one transaction per migration."""
    connectable = engine_from_config(
        config.get_section(config.config_ini_section, {}),
        prefix="sqlalchemy.",
        poolclass=pool.NullPool,
    )
    with connectable.connect() as connection:
        context.configure(connection=connection, render_as_batch=True)
        with context.begin_transaction():
            if connection.dialect.name == "postgresql":
                connection.execute(text(f"SELECT pg_advisory_xact_lock({_PG_MIGRATION_LOCK})"))
            context.run_migrations()
    connectable.dispose()


run_migrations_online()
