"""Alembic environment: the URL comes from the caller (cadence db upgrade) or settings."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from cadence.db.models import Base


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is None:
    from cadence.config import get_settings
    from cadence.db.session import make_engine

    with make_engine(get_settings().database_url).connect() as conn:
        _run(conn)
        conn.commit()
else:
    _run(connection)
