"""What a send batch reads: its leased drip deliveries with their subscribers and enrollments,
and which of their addresses are suppressed. The send path is ``operations/delivery.py``; its SQL is here.

Why it looks like this:

- Plain columns, not ORM objects (:class:`DueRow`): hydrating three mapped objects per email
  cost ~50 µs (bench/send_throughput.py). The rare rows that must change (skipped, postponed,
  failed) are fetched through the ORM by id (:func:`rows_of`).
- ``one_of`` (``= ANY(:array)`` on PostgreSQL): one parameter whatever the batch size.
- The inner join on enrollments makes this the *drip* load: a transactional (or any other
  enrollment-less) delivery is not returned, and the send path hands the ids it did not find
  to the loader of their kind (db/transactional.py).
- Suppressions are looked up by plain hash (``sha256``), one query per batch: the keyed hashes
  an erase leaves (core/suppression_keys.py) only matter when someone signs up again, and then the
  signup checks them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from cadence.core.suppression_keys import plain_hash
from cadence.db.models import Delivery, Enrollment, Event, Subscriber, SubscriberTag, Suppression
from cadence.db.queries import one_of

__all__ = [
    "GOAL_EVENT",
    "DueRow",
    "load_due",
    "record_goal_reached",
    "rows_of",
    "suppressed_addresses",
    "tags_of",
]


@dataclass(frozen=True, slots=True)
class DueRow:
    """What the send path reads of one leased delivery, its subscriber and its enrollment."""

    id: int
    campaign_id: str
    step_index: int
    due_at: datetime
    attempts: int
    lease_token: str | None
    enrollment_id: int
    subscriber_id: int
    email: str
    first_name: str
    attributes: dict[str, Any]
    timezone: str | None
    status: str
    paused_until: datetime | None
    enrollment_state: str
    enrolled_at: datetime


_DUE_COLUMNS = (
    Delivery.id,
    Delivery.campaign_id,
    Delivery.step_index,
    Delivery.due_at,
    Delivery.attempts,
    Delivery.lease_token,
    Delivery.enrollment_id,
    Subscriber.id,
    Subscriber.email,
    Subscriber.first_name,
    Subscriber.attributes,
    Subscriber.timezone,
    Subscriber.status,
    Subscriber.paused_until,
    Enrollment.state,
    Enrollment.enrolled_at,
)


def load_due(session: Session, delivery_ids: Sequence[int]) -> list[DueRow]:
    """The drip deliveries among `delivery_ids` (leased by the caller), in id order."""
    dialect = session.get_bind().dialect.name
    return [
        DueRow(*row)
        for row in session.execute(
            select(*_DUE_COLUMNS)
            .join(Subscriber, Delivery.subscriber_id == Subscriber.id)
            .join(Enrollment, Delivery.enrollment_id == Enrollment.id)
            .where(one_of(Delivery.id, delivery_ids, dialect))
            .order_by(Delivery.id)
        )
    ]


def suppressed_addresses(session: Session, emails: Iterable[str]) -> set[str]:
    """Those of `emails` that are suppressed (bounced, complained), as given."""
    hash_of = {email: plain_hash(email) for email in emails}
    if not hash_of:
        return set()
    dialect = session.get_bind().dialect.name
    is_suppressed = one_of(Suppression.email_hash, sorted(set(hash_of.values())), dialect)
    found = set(session.scalars(select(Suppression.email_hash).where(is_suppressed)))
    return {email for email, digest in hash_of.items() if digest in found}


def tags_of(session: Session, subscriber_ids: Iterable[int]) -> dict[int, set[str]]:
    """The staff tags of these subscribers (an exit goal may name one): one query per batch, and
    only for a batch whose campaign's goal has tags."""
    ids = sorted(set(subscriber_ids))
    found: dict[int, set[str]] = {i: set() for i in ids}
    if not ids:
        return found
    dialect = session.get_bind().dialect.name
    whose = one_of(SubscriberTag.subscriber_id, ids, dialect)
    query = select(SubscriberTag.subscriber_id, SubscriberTag.tag).where(whose)
    for subscriber_id, tag in session.execute(query):
        found[subscriber_id].add(tag)
    return found


# The event a reached exit goal leaves: the report counts it at the step × segment of the email
# the subscriber had last received (db/results.py, metric "exit_goal"), the timeline shows it.
GOAL_EVENT = "exit_goal"


def record_goal_reached(session: Session, due: DueRow, step_id: str, now: datetime) -> None:
    """Record that `due`'s subscriber reached the exit goal before `step_id` went out. The event
    belongs to the last step they were sent (the email that converted them), or to this skipped
    step when they converted before the first email."""
    last_sent = session.scalar(
        select(Delivery.id)
        .where(Delivery.enrollment_id == due.enrollment_id, Delivery.state == "sent")
        .order_by(Delivery.step_index.desc())
        .limit(1)
    )
    session.add(
        Event(
            subscriber_id=due.subscriber_id,
            delivery_id=last_sent if last_sent is not None else due.id,
            kind=GOAL_EVENT,
            data={"campaign": due.campaign_id, "before_step": step_id},
            created_at=now,
        )
    )


def rows_of(session: Session, due: DueRow) -> tuple[Delivery, Enrollment, Subscriber]:
    """The mapped rows behind `due`, for the rare paths that change them."""
    delivery = session.get(Delivery, due.id)
    enrollment = session.get(Enrollment, due.enrollment_id)
    subscriber = session.get(Subscriber, due.subscriber_id)
    assert delivery is not None and enrollment is not None and subscriber is not None  # rows are leased
    return delivery, enrollment, subscriber
