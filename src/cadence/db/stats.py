"""Counts of pending work for the ``/metrics`` gauges, read at scrape time.

Each query is written as the predicate of a partial index, so its cost follows the pending rows,
not the size of the tables (a ledger of millions of sent rows costs nothing here):

- due enrollments: ``ix_enrollments_due`` (active, with a next_send_at);
- queued / leased / retrying deliveries: ``ix_deliveries_unqueued`` and ``ix_deliveries_enqueued``
  (state queued or sending, split on enqueued_at), one statement each.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, and_, func, literal_column, select
from sqlalchemy.exc import SQLAlchemyError

from cadence.db.models import Delivery, Enrollment
from cadence.db.session import engine_for


@dataclass(frozen=True)
class PendingWork:
    due: int  # active enrollments whose next step is due now (the next tick claims them)
    queued: int  # ledger rows waiting for a worker (first attempt)
    leased: int  # rows a worker holds (state sending) right now
    retrying: int  # rows waiting for another attempt after a transient failure


def pending_work(conn: Connection, now: datetime) -> PendingWork:
    """What is waiting, at business time `now` (see the module docstring for the indexes)."""
    due = conn.scalar(
        select(func.count())
        .select_from(Enrollment)
        .where(Enrollment.state == "active", Enrollment.next_send_at.is_not(None), Enrollment.next_send_at <= now)
    )
    pending = Delivery.state.in_(("queued", "sending"))
    counts = {"queued": 0, "sending": 0, "retrying": 0}
    retried = (Delivery.attempts > literal_column("0")).label("retried")  # one expression in SELECT and GROUP BY
    for enqueued in (Delivery.enqueued_at.is_(None), Delivery.enqueued_at.is_not(None)):
        rows = conn.execute(
            select(Delivery.state, retried, func.count())
            .where(and_(pending, enqueued))
            .group_by(Delivery.state, retried)
        )
        for state, was_retried, n in rows:
            key = "retrying" if state == "queued" and was_retried else state
            counts[key] += int(n)
    return PendingWork(
        due=int(due or 0), queued=counts["queued"], leased=counts["sending"], retrying=counts["retrying"]
    )


def read_pending_work(database_url: str, now: datetime) -> PendingWork | None:
    """:func:`pending_work` on a connection of its own, or None if the database cannot answer:
    a scrape must report the database as down (``cadence_database_up 0``), not fail."""
    try:
        with engine_for(database_url).connect() as conn:
            return pending_work(conn, now)
    except SQLAlchemyError:
        return None
