"""import job findings and error report retention

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06 16:00:00

The console's import jobs keep what the campaigns' segment rules make of the file's columns and
values (operations/import_findings.py: the CLI's warnings), first from the check before the
import, then from the whole file; and when their error report was deleted under
CADENCE_IMPORT_REPORT_DAYS. Additive and nullable: existing jobs show no findings.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("import_jobs") as batch:
        batch.add_column(sa.Column("findings", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("report_deleted_at", sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("import_jobs") as batch:
        batch.drop_column("report_deleted_at")
        batch.drop_column("findings")
