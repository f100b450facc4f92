"""The reads behind enrolling, resuming and exit goals (engine.py decides; these fetch).

Why they look like this: each reads a handful of rows through an index (UNIQUE (subscriber_id,
campaign_id), UNIQUE (enrollment_id, step_index), UNIQUE dedupe_key, UNIQUE email_key), so the
ORM's objects are fine here: the callers change them in place and the session writes them. The
hot paths (the tick's claim, the send batch) have their own set-based SQL (queries.py,
send_batch.py, ledger.py).
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from cadence.db.models import Delivery, Enrollment, Event, Subscriber

__all__ = [
    "active_enrollments_in",
    "active_subscribers",
    "enrollments_of",
    "event_key_seen",
    "step_delivery",
    "subscriber_by_email_key",
]


def enrollments_of(session: Session, campaign_id: str, subscriber_ids: Sequence[int]) -> dict[int, Enrollment]:
    """The existing enrollments of `subscriber_ids` in `campaign_id`, by subscriber id."""
    query = select(Enrollment).where(
        Enrollment.campaign_id == campaign_id, Enrollment.subscriber_id.in_(list(subscriber_ids))
    )
    return {e.subscriber_id: e for e in session.scalars(query)}


def step_delivery(session: Session, enrollment_id: int, step_index: int) -> Delivery | None:
    """The ledger row of one step of one enrollment, if the tick made it (there is at most one)."""
    return session.scalar(
        select(Delivery).where(Delivery.enrollment_id == enrollment_id, Delivery.step_index == step_index)
    )


def event_key_seen(session: Session, dedupe_key: str) -> bool:
    """Whether an event with this provider key was stored already (a webhook delivered twice)."""
    return session.scalar(select(Event.id).where(Event.dedupe_key == dedupe_key)) is not None


def active_enrollments_in(session: Session, subscriber_id: int, campaign_ids: Sequence[str]) -> list[Enrollment]:
    """The subscriber's active enrollments in `campaign_ids` (those an exit goal ends)."""
    query = select(Enrollment).where(
        Enrollment.subscriber_id == subscriber_id,
        Enrollment.campaign_id.in_(list(campaign_ids)),
        Enrollment.state == "active",
    )
    return list(session.scalars(query))


def subscriber_by_email_key(session: Session, key: str) -> Subscriber | None:
    """The subscriber whose lowercased address is `key`."""
    return session.scalar(select(Subscriber).where(Subscriber.email_key == key))


def active_subscribers(session: Session) -> list[Subscriber]:
    """Every active subscriber (``campaigns enroll --all`` / ``--segment``: the segment is
    chosen in Python from their answers today, as the send path chooses it)."""
    return list(session.scalars(select(Subscriber).where(Subscriber.status == "active")))
