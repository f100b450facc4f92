"""Alembic migrations on real SQLite and PostgreSQL: the chain upgrades, the head matches the
models' indexes, and 0002 goes down and up again on a database that holds rows."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import command

from cadence.core.subscriber_fields import SubscriberInput
from cadence.db.migrate import alembic_config, upgrade
from cadence.db.models import Base
from cadence.db.session import engine_for, transaction
from cadence.operations.subscribers import import_subscribers
from tests.support.keys import TEST_KEYS


def indexes(url: str, table: str) -> set[str]:
    found = sa.inspect(engine_for(url)).get_indexes(table)
    return {str(ix["name"]) for ix in found if not ix.get("duplicates_constraint")}  # not UNIQUE's own


def test_head_has_the_models_indexes_and_0002_goes_down_and_up(database_url: str) -> None:
    upgrade(database_url)
    model_indexes = {ix.name for ix in Base.metadata.tables["deliveries"].indexes}
    assert indexes(database_url, "deliveries") == model_indexes
    assert {"ix_deliveries_unqueued", "ix_deliveries_enqueued"} <= model_indexes
    with transaction(database_url) as session:
        rows = [SubscriberInput("a@example.com", "A", "UTC", {})]
        import_subscribers(session, rows, datetime.now(UTC), keys=TEST_KEYS)

    config = alembic_config()
    with engine_for(database_url).begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0001")
    assert "ix_deliveries_state_not_before" in indexes(database_url, "deliveries")
    upgrade(database_url)
    assert indexes(database_url, "deliveries") == model_indexes
    with engine_for(database_url).connect() as connection:
        assert connection.execute(sa.text("SELECT count(*) FROM subscribers")).scalar() == 1


def test_0003_marks_existing_suppressions_as_plain_sha256_and_goes_down_and_up(database_url: str) -> None:
    config = alembic_config()
    with engine_for(database_url).begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0002")
    with engine_for(database_url).begin() as connection:
        connection.execute(
            sa.text(
                "INSERT INTO suppressions (email_hash, reason, detail, created_at) "
                "VALUES ('ab12', 'erased', '', '2026-12-01 12:00:00')"
            )
        )
    upgrade(database_url)
    with engine_for(database_url).connect() as connection:
        row = connection.execute(sa.text("SELECT email_hash, hash_version, reason FROM suppressions")).one()
    assert tuple(row) == ("ab12", "sha256", "erased")
    with engine_for(database_url).begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0002")
    columns = {c["name"] for c in sa.inspect(engine_for(database_url)).get_columns("suppressions")}
    assert "hash_version" not in columns
    upgrade(database_url)
    columns = {c["name"] for c in sa.inspect(engine_for(database_url)).get_columns("suppressions")}
    assert "hash_version" in columns
