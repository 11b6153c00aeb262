-- The compose PostgreSQL holds two databases: `registry` (POSTGRES_DB) and this one.
CREATE DATABASE issuer OWNER acmezone;
