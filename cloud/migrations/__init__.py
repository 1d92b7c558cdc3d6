"""Versioned schema migrations (Alembic), run on start-up for SQLite and PostgreSQL alike."""
