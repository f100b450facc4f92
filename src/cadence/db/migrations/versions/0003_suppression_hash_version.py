"""suppressions say how their address was hashed (plain SHA-256 or keyed HMAC)

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06 07:30:00

Issue 10: the suppression left by an erase becomes an HMAC under a key derived from the secret
(cadence.core.suppression_keys). The rows already there are plain SHA-256 and cannot be converted
here (that needs the addresses, which an erase deleted, and the secret, which migrations do not
see): they get ``hash_version = 'sha256'`` and stay honoured, and an erased one is re-hashed
under the key the next time its address is seen (subscribers.find_suppression).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("suppressions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("hash_version", sa.String(length=40), nullable=False, server_default="sha256"))


def downgrade() -> None:
    # Keyed rows cannot become plain hashes again; they stay (an unknown hash suppresses no one
    # on the old code, which is the best a downgrade can do without the addresses).
    with op.batch_alter_table("suppressions", schema=None) as batch_op:
        batch_op.drop_column("hash_version")
