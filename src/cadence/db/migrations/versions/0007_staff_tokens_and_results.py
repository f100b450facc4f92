"""staff API tokens, results rollups and the indexes `cadence report` reads

Revision ID: 0007
Revises: 0005
Create Date: 2026-12-06 10:10:00

Issue 13 (items 6 and 9): ``api_tokens`` holds the staff API's tokens as SHA-256 digests only;
``result_rollups``, ``link_rollups``, ``rollup_watermarks`` and ``rollup_pending`` hold campaign
results folded from the ledger and the events (db/results.py); ``ix_deliveries_failed`` finds
why deliveries failed without reading the sent ones, and ``ix_events_delivery_kind`` finds
"the first open of a delivery" without a DISTINCT. Measured in bench/report_scale.py (docs/performance.md).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0005"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "api_tokens",
        sa.Column("id", _ID, nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("scope", sa.String(length=10), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("revoked_at", sa.DateTime(), nullable=True),
        sa.Column("last_used_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_api_tokens"),
        sa.UniqueConstraint("name", name="uq_api_tokens_name"),
        sa.UniqueConstraint("token_hash", name="uq_api_tokens_token_hash"),
    )
    op.create_table(
        "result_rollups",
        sa.Column("campaign_id", sa.String(length=100), nullable=False),
        sa.Column("step_index", sa.Integer(), nullable=False),
        sa.Column("segment_id", sa.String(length=100), nullable=False),
        sa.Column("day", sa.String(length=10), nullable=False),
        sa.Column("metric", sa.String(length=20), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("campaign_id", "step_index", "segment_id", "day", "metric", name="pk_result_rollups"),
    )
    op.create_table(
        "link_rollups",
        sa.Column("campaign_id", sa.String(length=100), nullable=False),
        sa.Column("step_index", sa.Integer(), nullable=False),
        sa.Column("link_id", sa.BigInteger(), nullable=False),
        sa.Column("day", sa.String(length=10), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("campaign_id", "step_index", "link_id", "day", name="pk_link_rollups"),
    )
    op.create_table(
        "rollup_watermarks",
        sa.Column("name", sa.String(length=40), nullable=False),
        sa.Column("last_id", sa.BigInteger(), nullable=False),
        sa.Column("candidate_id", sa.BigInteger(), nullable=False),
        sa.Column("candidate_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("name", name="pk_rollup_watermarks"),
    )
    op.create_table(
        "rollup_pending",
        sa.Column("delivery_id", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("delivery_id", name="pk_rollup_pending"),
    )
    op.create_index(
        "ix_deliveries_failed",
        "deliveries",
        ["campaign_id", "step_index"],
        postgresql_where=sa.text("state = 'failed'"),
        sqlite_where=sa.text("state = 'failed'"),
    )
    op.create_index("ix_events_delivery_kind", "events", ["delivery_id", "kind", "id"])


def downgrade() -> None:
    op.drop_index("ix_events_delivery_kind", table_name="events")
    op.drop_index("ix_deliveries_failed", table_name="deliveries")
    op.drop_table("rollup_pending")
    op.drop_table("rollup_watermarks")
    op.drop_table("link_rollups")
    op.drop_table("result_rollups")
    op.drop_table("api_tokens")
