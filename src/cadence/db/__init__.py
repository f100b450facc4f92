"""The database adapter: tables (models.py), the engine/session factory (session.py), the
queries whose shape matters (queries.py) and Alembic migrations (migrations/)."""
