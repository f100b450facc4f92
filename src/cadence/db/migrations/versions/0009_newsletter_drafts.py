"""newsletter drafts authored through the API: newsletter_drafts and newsletter_draft_versions

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 12:55:00

Issue 13 item 1: a newsletter is written as a file or, through the staff API and console, as a
stored draft. The draft row holds the current version (``version`` is the optimistic-concurrency
counter an update must name); every saved version is kept in newsletter_draft_versions, so an
overwritten text can always be found again. Additive: no existing table changes.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "newsletter_drafts",
        sa.Column("id", sa.String(length=100), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("document", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("updated_by", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_newsletter_drafts"),
    )
    op.create_table(
        "newsletter_draft_versions",
        sa.Column("id", _ID, nullable=False),
        sa.Column("newsletter_id", sa.String(length=100), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("document", sa.JSON(), nullable=False),
        sa.Column("saved_at", sa.DateTime(), nullable=False),
        sa.Column("saved_by", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_newsletter_draft_versions"),
        sa.UniqueConstraint("newsletter_id", "version", name="uq_newsletter_draft_versions_newsletter_id_version"),
        sqlite_autoincrement=True,
    )


def downgrade() -> None:
    op.drop_table("newsletter_draft_versions")
    op.drop_table("newsletter_drafts")
