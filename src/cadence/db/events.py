"""The writes and reads behind recording events: bounces, complaints, webhook events, the
single-use keys of data links (operations/bounce_events.py and enrollment.record_event decide what an event means).

Why they look like this:

- :func:`claim_event_key` is ``INSERT ... ON CONFLICT (dedupe_key) DO NOTHING RETURNING id``
  rather than select-then-insert: on PostgreSQL a concurrent transaction inserting the same key
  makes this one wait and then insert nothing, where a prior SELECT would have seen no row and
  both would apply the event (a provider's webhook delivered twice at once).
- A bounce names its delivery by our Message-ID (the delivery id is in it) or by the provider's
  own id, stored as ``provider_message_id`` by the transport: :func:`delivery_by_provider_id`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from cadence.db.models import Delivery, Event

__all__ = [
    "claim_event_key",
    "delivery_by_provider_id",
    "soft_bounce_counted",
]


def claim_event_key(
    session: Session,
    key: str,
    *,
    kind: str,
    now: datetime,
    subscriber_id: int | None = None,
    delivery_id: int | None = None,
    data: dict[str, Any] | None = None,
) -> bool:
    """Insert an Event with ``dedupe_key=key`` unless one exists; True if this call inserted it."""
    values = dict(
        subscriber_id=subscriber_id, delivery_id=delivery_id, kind=kind, data=data or {}, dedupe_key=key, created_at=now
    )
    if session.get_bind().dialect.name == "postgresql":
        pg = pg_insert(Event).values(values).on_conflict_do_nothing(index_elements=["dedupe_key"])
        return session.execute(pg.returning(Event.id)).scalar() is not None
    lite = sqlite_insert(Event).values(values).on_conflict_do_nothing(index_elements=["dedupe_key"])
    return session.execute(lite.returning(Event.id)).scalar() is not None


def soft_bounce_counted(session: Session, delivery_id: int) -> bool:
    """Whether this delivery already cost its subscriber a soft bounce (a DSN and a webhook
    for the same message must count once)."""
    query = select(Event.id).where(Event.delivery_id == delivery_id, Event.kind == "soft_bounce").limit(1)
    return session.scalar(query) is not None


def delivery_by_provider_id(session: Session, *message_ids: str) -> Delivery | None:
    """The delivery the provider knows by one of `message_ids` (Postmark's MessageID is its own)."""
    query = select(Delivery).where(Delivery.provider_message_id.in_(list(message_ids))).limit(1)
    return session.scalar(query)
