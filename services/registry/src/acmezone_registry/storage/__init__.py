"""Persistence for the registry: SQLAlchemy 2.0 over SQLite (default) or PostgreSQL.

`database` opens engines, `tables` declares the schema, `repository` is the only API the domain
uses, `migrations` holds the Alembic history applied at start.
"""
