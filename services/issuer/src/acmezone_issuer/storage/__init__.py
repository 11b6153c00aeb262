"""Persistence for the issuer: SQLAlchemy 2.0 over SQLite (default) or PostgreSQL.

`database` opens the engine, applies the Alembic history in `migrations` and shields operations
from cancellation; `tables` declares the schema; `repository` is the only API the rest of the
issuer uses.
"""
