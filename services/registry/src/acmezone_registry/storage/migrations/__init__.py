"""Alembic migrations of the registry schema, applied by `migrate.upgrade` at start."""
