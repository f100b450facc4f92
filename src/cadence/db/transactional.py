"""The ledger rows of transactional emails (confirmation, emailed links): ``kind='transactional'``.

Why they look like this:

- ``enrollment_id`` is NULL (no drip), so UNIQUE (enrollment_id, step_index) never applies: SQL
  treats NULLs as distinct on PostgreSQL and SQLite alike, and each request gets its own row.
  ``campaign_id`` is :data:`TRANSACTIONAL_CAMPAIGN` and ``step_id`` names the message, so a drip
  report (which reads one campaign id, and ``kind='drip'``) never counts them, and a staff pause
  of a drip campaign never holds a confirmation back.
- ``segment_id`` holds the signup form a confirmation belongs to (its ``page.confirm`` copy says
  what the person asked for: what a segment is for a drip step, which variant of the content);
  empty for the link emails. The sender's details come from the sender file at send time.
- No URL is stored: the links carry secrets (a sealed confirmation token, a single-use data
  link). They are rebuilt at send time from the subscriber row and the secret key.
- The row is stamped ``enqueued_at`` when it is made: whoever made it hands it to a worker (or
  sends it in the web process) right after the commit, so the tick must not enqueue it a second
  time; if that hand-over is lost, the tick takes the row again after one lease
  (``deliveries_to_enqueue``), as it does for any lost task.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from cadence.db.models import Delivery, Subscriber
from cadence.db.queries import one_of

__all__ = [
    "TRANSACTIONAL_CAMPAIGN",
    "TransactionalRow",
    "finish_transactional",
    "insert_transactional",
    "transactional_rows",
]

TRANSACTIONAL_CAMPAIGN = "_transactional"


def insert_transactional(
    session: Session, *, message: str, subscriber_id: int, form: str, now: datetime, wall_now: datetime
) -> int:
    """A queued transactional delivery of `message` to `subscriber_id`, due at business time
    `now`, already counted as enqueued at `wall_now` (see the module docstring); its id."""
    delivery = Delivery(
        enrollment_id=None,
        subscriber_id=subscriber_id,
        campaign_id=TRANSACTIONAL_CAMPAIGN,
        step_id=message,
        step_index=0,
        segment_id=form,
        kind="transactional",
        state="queued",
        attempts=0,
        due_at=now,
        not_before=now,
        enqueued_at=wall_now,
        message_id="",
        content_hash="",
        last_error="",
        created_at=now,
    )
    session.add(delivery)
    session.flush()
    return delivery.id


@dataclass(frozen=True, slots=True)
class TransactionalRow:
    """What the send path reads of one leased transactional delivery and its subscriber."""

    id: int
    message: str
    form: str
    attempts: int
    lease_token: str | None
    subscriber_id: int
    email: str
    status: str
    consent: dict[str, Any]


def transactional_rows(session: Session, ids: Sequence[int]) -> list[TransactionalRow]:
    """The transactional deliveries among `ids` (leased by the caller), with their subscribers.
    Called only for the ids the drip's load did not find, so a drip batch never pays for it."""
    if not ids:
        return []
    dialect = session.get_bind().dialect.name
    rows = session.execute(
        select(
            Delivery.id,
            Delivery.step_id,
            Delivery.segment_id,
            Delivery.attempts,
            Delivery.lease_token,
            Subscriber.id,
            Subscriber.email,
            Subscriber.status,
            Subscriber.consent,
        )
        .join(Subscriber, Delivery.subscriber_id == Subscriber.id)
        .where(one_of(Delivery.id, ids, dialect), Delivery.kind == "transactional")
        .order_by(Delivery.id)
    )
    return [TransactionalRow(*row) for row in rows]


def finish_transactional(session: Session, delivery_id: int, state: str, error: str) -> None:
    """End a leased transactional delivery that will not be sent (``skipped`` or ``failed``).
    A plain UPDATE by id: the caller holds the lease it got in this same batch."""
    session.execute(
        update(Delivery)
        .where(Delivery.id == delivery_id, Delivery.state == "sending")
        .values(state=state, last_error=error[:2000], lease_expires_at=None)
    )
