"""Run Alembic migrations from code (``cadence db upgrade``), on SQLite or PostgreSQL."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from cadence.db.session import engine_for

_INI = Path(__file__).with_name("alembic.ini")


def alembic_config() -> Config:
    config = Config(str(_INI))
    config.set_main_option("script_location", str(_INI.parent / "migrations"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the database at `url` to `revision`. Safe to run again; each step is transactional
    on PostgreSQL (transactional DDL)."""
    config = alembic_config()
    with engine_for(url).begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def schema_revisions(url: str) -> tuple[set[str], set[str], bool]:
    """(the revisions the database at `url` is at, the head revisions of our migrations, whether
    the database is at a revision these migrations do not know: a newer release migrated it, as
    in a rolling upgrade). The first is empty for a database never migrated. Raises SQLAlchemy's
    errors if the database is unreachable."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    script = ScriptDirectory.from_config(alembic_config())
    heads = set(script.get_heads())
    with engine_for(url).connect() as connection:
        current = set(MigrationContext.configure(connection).get_current_heads())
    ahead = False
    for revision in current:
        try:
            script.get_revision(revision)
        except CommandError:
            ahead = True
    return current, heads, ahead
