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
