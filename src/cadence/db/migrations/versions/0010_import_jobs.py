"""console imports: import_jobs

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 13:00:00

Issue 14: a CSV uploaded in the staff console is imported by a Celery task (or a thread of
`cadence web` with the single-machine brokers); its progress and result live in this row, so the
job page can show them whichever process runs it. Additive: nothing else changes.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "import_jobs",
        sa.Column("id", _ID, nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("mode", sa.String(length=20), nullable=False),
        sa.Column("file_name", sa.String(length=300), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("topics", sa.JSON(), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=True),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(), nullable=True),
        sa.Column("runner", sa.String(length=200), nullable=False),
        sa.Column("rows_read", sa.BigInteger(), nullable=False),
        sa.Column("bytes_read", sa.BigInteger(), nullable=False),
        sa.Column("created", sa.BigInteger(), nullable=False),
        sa.Column("updated", sa.BigInteger(), nullable=False),
        sa.Column("unchanged", sa.BigInteger(), nullable=False),
        sa.Column("rejected", sa.BigInteger(), nullable=False),
        sa.Column("suppressed", sa.BigInteger(), nullable=False),
        sa.Column("problem_count", sa.BigInteger(), nullable=False),
        sa.Column("tags_added", sa.BigInteger(), nullable=False),
        sa.Column("topics_joined", sa.BigInteger(), nullable=False),
        sa.Column("rows_per_second", sa.Float(), nullable=False),
        sa.Column("problems", sa.JSON(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("delimiter", sa.String(length=4), nullable=False),
        sa.Column("has_report", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_import_jobs"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_import_jobs_created_at", "import_jobs", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_import_jobs_created_at", table_name="import_jobs")
    op.drop_table("import_jobs")
