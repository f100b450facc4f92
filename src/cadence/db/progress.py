"""Counts for watching a group of subscribers go through a drip (operations/simulation.py drives the
``cadence demo`` and the end-to-end tests with them).

Why they look like this: the driver moves a simulated clock only when nothing is owed at the
current simulated minute, so "owed" must count both halves of the pipeline: enrollments the
tick has not claimed yet (due, still active) and deliveries claimed but not finished (queued and
due, or being sent), so the clock never moves past a step that is still in flight.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from cadence.db.models import Delivery, Enrollment

__all__ = [
    "active_and_sent",
    "work_owed",
]


def work_owed(session: Session, subscriber_ids: Sequence[int], now: datetime) -> int:
    """Enrollments due and deliveries due or in flight at `now`, for `subscriber_ids`."""
    ids = list(subscriber_ids)
    due = session.scalar(
        select(func.count()).where(
            Enrollment.subscriber_id.in_(ids), Enrollment.state == "active", Enrollment.next_send_at <= now
        )
    )
    inflight = session.scalar(
        select(func.count()).where(
            Delivery.subscriber_id.in_(ids),
            or_(Delivery.state == "sending", (Delivery.state == "queued") & (Delivery.not_before <= now)),
        )
    )
    return int(due or 0) + int(inflight or 0)


def active_and_sent(session: Session, subscriber_ids: Sequence[int]) -> tuple[int, int]:
    """(active enrollments, sent deliveries) of `subscriber_ids`."""
    ids = list(subscriber_ids)
    active = session.scalar(
        select(func.count()).where(Enrollment.subscriber_id.in_(ids), Enrollment.state == "active")
    )
    sent = session.scalar(select(func.count()).where(Delivery.subscriber_id.in_(ids), Delivery.state == "sent"))
    return int(active or 0), int(sent or 0)
