"""The SQL of what stops email to a person: the suppression list, and the enrollments a suppression
or an unsubscribe ends (operations in cadence.operations.subscribers decide; these read and write).

Why they look like this: every lookup is by ``email_hash``, which is indexed, and a person has at
most a few rows (a plain bounce row, a keyed erase row under the current key, perhaps one under
an older key: core/suppression_keys.py), so the rows come back whole and the caller re-keys them in
place. The send path reads suppressions for a whole batch in one statement instead
(send_batch.suppressed_addresses).
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from cadence.db.models import Enrollment, Suppression

__all__ = ["delete_erased", "delete_for", "end_active_enrollments", "has_row", "rows_for"]


def has_row(session: Session, email_hash: str) -> bool:
    """Whether any suppression row has exactly this hash (a plain SHA-256, the common check)."""
    return session.scalar(select(Suppression.id).where(Suppression.email_hash == email_hash).limit(1)) is not None


def rows_for(session: Session, hashes: Collection[str]) -> list[Suppression]:
    """Every row under any of `hashes` (one address under each key it may have been hashed with)."""
    return list(session.scalars(select(Suppression).where(Suppression.email_hash.in_(list(hashes)))))


def delete_erased(session: Session, hashes: Collection[str]) -> None:
    """Remove the ``erased`` rows under `hashes`, leaving any bounce or complaint row."""
    session.execute(
        delete(Suppression).where(Suppression.email_hash.in_(list(hashes)), Suppression.reason == "erased")
    )


def delete_for(session: Session, hashes: Collection[str]) -> None:
    """Remove every row under `hashes` (the demo clearing its own fictional runners)."""
    session.execute(delete(Suppression).where(Suppression.email_hash.in_(list(hashes))))


def end_active_enrollments(session: Session, subscriber_id: int, now: datetime, reason: str) -> None:
    """Cancel the subscriber's active enrollments in one UPDATE (an unsubscribe, a suppression):
    set-based, because the caller holds no Enrollment objects and needs none."""
    session.execute(
        update(Enrollment)
        .where(Enrollment.subscriber_id == subscriber_id, Enrollment.state == "active")
        .values(state="cancelled", next_send_at=None, ended_at=now, end_reason=reason)
    )
