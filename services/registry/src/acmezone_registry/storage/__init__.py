"""Persistence for the registry: SQLAlchemy 2.0 over SQLite (default) or PostgreSQL.

`database` opens engines, `tables` declares the schema, `migrations` holds the Alembic history
applied at start. The domain uses only the repositories, built together by `stores`:
`revision_log` (transactions, the feed's revisions and history), `record_sets` (how values
become the feed's record sets), and one repository per aggregate: `registrations`,
`txt_values`, `tsig_keys`, `replay_guard`.
"""
