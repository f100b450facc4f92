"""indexes the staff console's pages read at 1,000,000 subscribers and 6,000,000 deliveries

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06 13:00:00

Issue 14 (pages under 300 ms; measured in bench/console_pages.py, docs/performance.md):

- ``ix_events_kind_created``: the dashboard's bounce and complaint counts of the last 30 days
  read only those events (a few in a thousand), not every open and click.
- ``ix_deliveries_failed_created``: "N deliveries failed in the last 30 days" reads the failed
  rows only (partial, like ``ix_deliveries_failed``).
- ``ix_enrollments_campaign_state``: people per campaign and state, and the earliest next send,
  answered from the index alone (an index-only scan) for the dashboard and the campaign list.
- ``ix_audit_log_actor_at``: the audit log of one person, newest first.
- ``enrollment_tallies`` (PostgreSQL: kept by triggers): people per campaign and state without
  counting a million enrollments (db/enrollment_tallies.py). On SQLite the table stays empty and
  the counts are read live (small lists, one writer).
- PostgreSQL only: trigram indexes (pg_trgm, a contrib extension shipped with PostgreSQL and
  marked trusted since 13, so a database owner may create it) on the lowercased address and
  first name, so the console's "contains" search is an index lookup instead of reading a million
  rows. Where the extension cannot be created the search still works, by reading the table.

Built inside the migration's transaction (CREATE INDEX CONCURRENTLY cannot be): on a large
ledger the upgrade blocks writes while it runs (23 s at 1,000,000 subscribers and 6,000,000
deliveries, bench/console_pages.py, load 7; about a minute at load 13): run it in a quiet moment.
"""

from __future__ import annotations

import logging

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

log = logging.getLogger(__name__)
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

# People per campaign, state and "waiting" (next send scheduled), kept by the database itself
# (db/enrollment_tallies.py says why): each statement that inserts, updates or deletes
# enrollments appends its net change as a few rows, whatever code path (or cascade from an
# erased subscriber) ran it. Statement-level, with transition tables (PostgreSQL 10+): one
# INSERT per statement, never a row per enrollment, and no shared counter row to wait on.
_TALLY = "SELECT campaign_id, state, next_send_at IS NOT NULL AS waiting, {sign} AS n FROM {rows}"
TALLY_TRIGGERS = [
    *(
        f"""CREATE FUNCTION cadence_enrollment_tally_{event}() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO enrollment_tallies (campaign_id, state, waiting, n)
            SELECT campaign_id, state, waiting, sum(n) FROM ({body}) AS changed
            GROUP BY campaign_id, state, waiting HAVING sum(n) <> 0;
            RETURN NULL;
        END $$"""
        for event, body in (
            ("insert", _TALLY.format(sign=1, rows="new_rows")),
            ("delete", _TALLY.format(sign=-1, rows="old_rows")),
            (
                "update",
                _TALLY.format(sign=-1, rows="old_rows") + " UNION ALL " + _TALLY.format(sign=1, rows="new_rows"),
            ),
        )
    ),
    """CREATE TRIGGER enrollment_tally_insert AFTER INSERT ON enrollments
       REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION cadence_enrollment_tally_insert()""",
    """CREATE TRIGGER enrollment_tally_delete AFTER DELETE ON enrollments
       REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION cadence_enrollment_tally_delete()""",
    """CREATE TRIGGER enrollment_tally_update AFTER UPDATE ON enrollments
       REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
       FOR EACH STATEMENT EXECUTE FUNCTION cadence_enrollment_tally_update()""",
]
_FAILED = sa.text("state = 'failed'")


def upgrade() -> None:
    op.create_index("ix_events_kind_created", "events", ["kind", "created_at"])
    op.create_index(
        "ix_deliveries_failed_created",
        "deliveries",
        ["created_at"],
        postgresql_where=_FAILED,
        sqlite_where=_FAILED,
    )
    op.create_index("ix_enrollments_campaign_state", "enrollments", ["campaign_id", "state", "next_send_at"])
    op.create_index("ix_audit_log_actor_at", "audit_log", ["actor", "at"])
    op.create_table(
        "enrollment_tallies",
        sa.Column("id", _ID, nullable=False),
        sa.Column("campaign_id", sa.String(length=100), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("waiting", sa.Boolean(), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_enrollment_tallies"),
    )
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    for statement in TALLY_TRIGGERS:
        op.execute(statement)
    # Counted under a lock that lets readers in and keeps writers out until this transaction
    # commits: no enrollment can change between the count and the triggers taking over.
    op.execute("LOCK TABLE enrollments IN SHARE MODE")
    op.execute(
        "INSERT INTO enrollment_tallies (campaign_id, state, waiting, n) "
        "SELECT campaign_id, state, next_send_at IS NOT NULL, count(*) FROM enrollments GROUP BY 1, 2, 3"
    )
    try:
        with bind.begin_nested():  # a savepoint: a refused CREATE EXTENSION leaves the rest intact
            bind.execute(sa.text("CREATE EXTENSION IF NOT EXISTS pg_trgm"))
    except sa.exc.DBAPIError as exc:
        log.warning("pg_trgm is not available (%s): the console's subscriber search reads the table", exc)
        return
    op.execute("CREATE INDEX ix_subscribers_email_key_trgm ON subscribers USING gin (email_key gin_trgm_ops)")
    op.execute("CREATE INDEX ix_subscribers_first_name_trgm ON subscribers USING gin (lower(first_name) gin_trgm_ops)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_subscribers_first_name_trgm")
        op.execute("DROP INDEX IF EXISTS ix_subscribers_email_key_trgm")
        for event in ("insert", "update", "delete"):
            op.execute(f"DROP TRIGGER IF EXISTS enrollment_tally_{event} ON enrollments")
            op.execute(f"DROP FUNCTION IF EXISTS cadence_enrollment_tally_{event}()")
    op.drop_table("enrollment_tallies")
    op.drop_index("ix_audit_log_actor_at", table_name="audit_log")
    op.drop_index("ix_enrollments_campaign_state", table_name="enrollments")
    op.drop_index("ix_deliveries_failed_created", table_name="deliveries")
    op.drop_index("ix_events_kind_created", table_name="events")
