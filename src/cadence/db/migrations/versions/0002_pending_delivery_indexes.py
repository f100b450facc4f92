"""pending-delivery indexes the send path's claim cannot use

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29 16:40:00

``ix_deliveries_state_not_before`` (state, not_before) let PostgreSQL answer the claim
``id IN (<batch>) AND (state = 'queued' AND not_before <= now OR state = 'sending' AND ...)``
by scanning every queued row instead of looking up the batch's ids: with statistics taken while
almost nothing was queued (any table between big sends), 'queued' looks rare, so each claim of
100 rows walked all N queued rows (O(N^2) for a send; 2.5-4 ms per claim at N = 20,000, seen
with auto_explain in bench/send_throughput.py). These two partial indexes serve the tick's
search for work (``queries.deliveries_to_enqueue``) and nothing else: their predicates mention
``enqueued_at``, which the claim and the ledger updates never constrain, so for those the
primary key is the only index left.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

PENDING = "state IN ('queued', 'sending')"


def upgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_index("ix_deliveries_state_not_before")
        where = sa.text(f"{PENDING} AND enqueued_at IS NULL")
        batch_op.create_index(
            "ix_deliveries_unqueued", ["not_before"], unique=False, postgresql_where=where, sqlite_where=where
        )
        where = sa.text(f"{PENDING} AND enqueued_at IS NOT NULL")
        batch_op.create_index(
            "ix_deliveries_enqueued", ["enqueued_at"], unique=False, postgresql_where=where, sqlite_where=where
        )


def downgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_index("ix_deliveries_enqueued")
        batch_op.drop_index("ix_deliveries_unqueued")
        batch_op.create_index("ix_deliveries_state_not_before", ["state", "not_before"], unique=False)
