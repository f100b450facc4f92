"""The reads behind staff reports (reports.py turns them into tables and documents).

Why they look like this: a report must count every delivery of a drip step exactly once
(issue #9), so each query groups in the database and returns counts, never rows per delivery,
except where the segment a pending delivery will get depends on the subscriber's answers *now*
(decided in Python by core/segments.py, as the send path does). Only ``kind = 'drip'`` rows
count: a transactional email (a confirmation sent in a campaign's name) or a newsletter is not
a step of the drip, even where it shares a campaign id (issue 12).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, func, select
from sqlalchemy.orm import Session

from cadence.db.models import Delivery, Enrollment, Subscriber

__all__ = [
    "due_enrollments",
    "due_enrollments_by_step",
    "finished_counts",
    "pending_deliveries",
    "reason_counts",
    "state_counts",
]


def _drip_steps_of(campaign_id: str) -> ColumnElement[bool]:
    return (Delivery.campaign_id == campaign_id) & (Delivery.kind == "drip")


def _due(campaign_id: str, now: datetime) -> tuple[ColumnElement[bool], ...]:
    return (
        Enrollment.campaign_id == campaign_id,
        Enrollment.state == "active",
        Enrollment.next_send_at.is_not(None),
        Enrollment.next_send_at <= now,
    )


def finished_counts(session: Session, campaign_id: str) -> Iterator[tuple[int, str, str, int]]:
    """(step index, segment id, sent|failed, count) of the campaign's drip deliveries."""
    rows = session.execute(
        select(Delivery.step_index, Delivery.segment_id, Delivery.state, func.count())
        .where(_drip_steps_of(campaign_id), Delivery.state.in_(("sent", "failed")))
        .group_by(Delivery.step_index, Delivery.segment_id, Delivery.state)
    )
    return (tuple(row) for row in rows)  # type: ignore[misc]


def pending_deliveries(session: Session, campaign_id: str, now: datetime) -> Iterator[tuple[int, dict[str, Any], bool]]:
    """(step index, subscriber attributes, postponed) per queued or sending drip delivery;
    postponed: queued for later than `now` without a failed attempt (as
    campaign_states.postponed_by_step counts them)."""
    postponed = and_(
        Delivery.state == "queued",
        Delivery.enqueued_at.is_(None),
        Delivery.not_before > now,
        Delivery.attempts == 0,
    )
    rows = session.execute(
        select(Delivery.step_index, Subscriber.attributes, postponed)
        .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
        .where(_drip_steps_of(campaign_id), Delivery.state.in_(("queued", "sending")))
    )
    return ((step, attributes, bool(later)) for step, attributes, later in rows)


def due_enrollments(session: Session, campaign_id: str, now: datetime) -> Iterator[tuple[int, dict[str, Any]]]:
    """(next step, subscriber attributes) per active enrollment due at `now`."""
    rows = session.execute(
        select(Enrollment.next_step, Subscriber.attributes)
        .join(Subscriber, Subscriber.id == Enrollment.subscriber_id)
        .where(*_due(campaign_id, now))
    )
    return (tuple(row) for row in rows)


def state_counts(session: Session, campaign_id: str) -> Iterator[tuple[int, str, int]]:
    """(step index, state, count) over every drip delivery of the campaign."""
    rows = session.execute(
        select(Delivery.step_index, Delivery.state, func.count())
        .where(_drip_steps_of(campaign_id))
        .group_by(Delivery.step_index, Delivery.state)
    )
    return (tuple(row) for row in rows)  # type: ignore[misc]


def due_enrollments_by_step(session: Session, campaign_id: str, now: datetime) -> Iterator[tuple[int, int]]:
    """(next step, count) of active enrollments due at `now`."""
    rows = session.execute(
        select(Enrollment.next_step, func.count()).where(*_due(campaign_id, now)).group_by(Enrollment.next_step)
    )
    return (tuple(row) for row in rows)  # type: ignore[misc]


def reason_counts(session: Session, campaign_id: str, states: tuple[str, ...]) -> Iterator[tuple[int, str, str, int]]:
    """(step index, state, recorded error, count) of drip deliveries in `states`."""
    rows = session.execute(
        select(Delivery.step_index, Delivery.state, Delivery.last_error, func.count())
        .where(_drip_steps_of(campaign_id), Delivery.state.in_(states))
        .group_by(Delivery.step_index, Delivery.state, Delivery.last_error)
    )
    return (tuple(row) for row in rows)  # type: ignore[misc]
