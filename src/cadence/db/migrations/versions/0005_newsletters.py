"""newsletters: their state and locked version, and one ledger row per newsletter and subscriber

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06 10:15:00

Issue 13: a newsletter is a one-off send on the same ledger as the drips (deliveries.kind =
'newsletter', no enrollment). The partial unique index makes "each subscriber gets it once" a
property of the database: scheduling twice, two ticks, a worker killed mid-send all meet it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "newsletters",
        sa.Column("id", sa.String(length=100), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("subject", sa.String(length=200), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("content", sa.JSON(), nullable=False),
        sa.Column("audience", sa.JSON(), nullable=False),
        sa.Column("send_at", sa.String(length=60), nullable=False),
        sa.Column("recipients", sa.Integer(), nullable=False),
        sa.Column("scheduled_at", sa.DateTime(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=True),
        sa.Column("changed_at", sa.DateTime(), nullable=False),
        sa.Column("changed_by", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_newsletters"),
    )
    where = sa.text("kind = 'newsletter'")
    op.create_index(
        "uq_deliveries_newsletter_subscriber",
        "deliveries",
        ["campaign_id", "subscriber_id"],
        unique=True,
        postgresql_where=where,
        sqlite_where=where,
    )


def downgrade() -> None:
    op.drop_index("uq_deliveries_newsletter_subscriber", table_name="deliveries")
    op.drop_table("newsletters")
