"""newsletter topics, staff tags, campaign states, delivery kinds and the audit log

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06 09:50:00

Issue 13: newsletters choose their audience by topic (what a subscriber consented to at
signup) and by tag (what staff labelled them); campaigns can be paused, cancelled, archived;
every staff action is written to the audit log. Issue 12: one ledger for drip, newsletter and
transactional emails, told apart by ``deliveries.kind`` (existing rows are drip steps).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "subscriber_topics",
        sa.Column("subscriber_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("topic", sa.String(length=100), nullable=False),
        sa.Column("joined_at", sa.DateTime(), nullable=False),
        sa.Column("source", sa.String(length=100), nullable=False),
        sa.ForeignKeyConstraint(
            ["subscriber_id"], ["subscribers.id"], name="fk_subscriber_topics_subscriber_id_subscribers", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("subscriber_id", "topic", name="pk_subscriber_topics"),
    )
    op.create_index("ix_subscriber_topics_topic", "subscriber_topics", ["topic"])
    op.create_table(
        "subscriber_tags",
        sa.Column("subscriber_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("tag", sa.String(length=100), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["subscriber_id"], ["subscribers.id"], name="fk_subscriber_tags_subscriber_id_subscribers", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("subscriber_id", "tag", name="pk_subscriber_tags"),
    )
    op.create_index("ix_subscriber_tags_tag", "subscriber_tags", ["tag"])
    op.create_table(
        "campaign_states",
        sa.Column("campaign_id", sa.String(length=100), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("changed_at", sa.DateTime(), nullable=False),
        sa.Column("changed_by", sa.String(length=200), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("campaign_id", name="pk_campaign_states"),
    )
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("kind", sa.String(length=20), nullable=False, server_default="drip"))
    op.create_table(
        "audit_log",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("action", sa.String(length=60), nullable=False),
        sa.Column("target", sa.String(length=200), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_log"),
    )
    op.create_index("ix_audit_log_at", "audit_log", ["at"])


def downgrade() -> None:
    op.drop_index("ix_audit_log_at", table_name="audit_log")
    op.drop_table("audit_log")
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_column("kind")
    op.drop_table("campaign_states")
    op.drop_index("ix_subscriber_tags_tag", table_name="subscriber_tags")
    op.drop_table("subscriber_tags")
    op.drop_index("ix_subscriber_topics_topic", table_name="subscriber_topics")
    op.drop_table("subscriber_topics")
