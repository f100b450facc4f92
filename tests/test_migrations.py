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


def test_0012_adds_the_import_job_findings_and_goes_down_and_up_keeping_the_jobs(database_url: str) -> None:
    """A job row from before 0012 keeps everything and shows no findings; after it, findings
    (JSON) and the report's deletion time are stored and read back; down and up again."""
    config = alembic_config()
    with engine_for(database_url).begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0011")
    counters = "rows_read, bytes_read, created, updated, unchanged, rejected, suppressed, problem_count, tags_added"
    counters += ", topics_joined"
    with engine_for(database_url).begin() as connection:
        connection.execute(
            sa.text(
                "INSERT INTO import_jobs (state, mode, file_name, size_bytes, topics, tags, actor, created_at, runner, "
                f"{counters}, rows_per_second, problems, message, delimiter, has_report) VALUES ('done', 'valid', "
                "'old.csv', 10, '[]', '[]', 'user:a@example.com', '2026-12-01 12:00:00', 'web', "
                "3, 10, 3, 0, 0, 0, 0, 0, 0, 0, 1.0, '[]', '', ',', false)"
            )
        )
    upgrade(database_url)
    from cadence.db.import_jobs import ImportJob

    with transaction(database_url) as session:
        job = session.scalars(sa.select(ImportJob)).one()
        assert (job.file_name, job.created, job.findings, job.report_deleted_at) == ("old.csv", 3, None, None)
        job.findings = {"stage": "import", "warnings": ["column 'Runs on' (runs_on) is stored, but ..."]}
        job.report_deleted_at = datetime(2026, 12, 31, tzinfo=UTC)
    with transaction(database_url) as session:
        job = session.scalars(sa.select(ImportJob)).one()
        assert job.findings == {"stage": "import", "warnings": ["column 'Runs on' (runs_on) is stored, but ..."]}
        assert job.report_deleted_at == datetime(2026, 12, 31, tzinfo=UTC)
    with engine_for(database_url).begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0011")
    columns = {c["name"] for c in sa.inspect(engine_for(database_url)).get_columns("import_jobs")}
    assert "findings" not in columns and "report_deleted_at" not in columns
    with engine_for(database_url).connect() as connection:
        assert connection.execute(sa.text("SELECT file_name FROM import_jobs")).scalar() == "old.csv"
    upgrade(database_url)
    columns = {c["name"] for c in sa.inspect(engine_for(database_url)).get_columns("import_jobs")}
    assert {"findings", "report_deleted_at"} <= columns
