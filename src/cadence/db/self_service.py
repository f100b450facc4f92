"""The SQL of what subscribers do themselves (issue 12): sign up, confirm, manage their emails, see
and erase their data. Called by :mod:`cadence.operations.signup`, ``.preferences`` and ``.privacy``;
every statement that touches the database for those flows is here, with why it is shaped so.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from cadence.db.models import Delivery, Enrollment, Event, Subscriber, SubscriberTopic
from cadence.db.session import engine_for

log = logging.getLogger(__name__)


def subscriber_by_key(session: Session, key: str, *, lock: bool = False) -> Subscriber | None:
    """The subscriber whose normalised address is `key` (``subscribers.email_key``, unique).

    With `lock`, the row is locked (``FOR UPDATE`` on PostgreSQL) so two simultaneous signups of
    one address cannot both pass the hourly confirmation limit; SQLite ignores the clause, and
    its ``BEGIN IMMEDIATE`` (db/session.py) already serialises writers."""
    query = select(Subscriber).where(Subscriber.email_key == key)
    return session.scalar(query.with_for_update() if lock else query)


def subscriber_by_id(session: Session, subscriber_id: int, *, lock: bool = False) -> Subscriber | None:
    """By primary key; with `lock`, locked like :func:`subscriber_by_key` (a confirm link opened
    twice at once must confirm, and enroll, once)."""
    return session.get(Subscriber, subscriber_id, with_for_update=lock)


def delivery_of(session: Session, delivery_id: int, subscriber_id: int) -> int | None:
    """`delivery_id` if it exists and is the subscriber's (an unsubscribe link's delivery may
    have gone; a token is never trusted to pair two ids it did not create together)."""
    delivery = session.get(Delivery, delivery_id)
    return delivery.id if delivery is not None and delivery.subscriber_id == subscriber_id else None


def event_key_taken(session: Session, dedupe_key: str) -> bool:
    """Whether an event holds `dedupe_key` (a data link's nonce is spent by the first export or
    erase: the UNIQUE ``events.dedupe_key`` makes "once" hold across processes)."""
    return session.scalar(select(Event.id).where(Event.dedupe_key == dedupe_key)) is not None


def join_topics(
    session: Session, subscriber_id: int, topics: Iterable[str], now: datetime, source: str
) -> list[str]:
    """Put the subscriber on `topics` (``subscriber_topics``); a topic they are already on keeps
    its first ``joined_at`` and source (when they first agreed is what consent records need).
    Returns the topics newly joined. The caller holds the subscriber row locked (confirm), so
    the check-then-insert cannot race with itself."""
    have = set(session.scalars(select(SubscriberTopic.topic).where(SubscriberTopic.subscriber_id == subscriber_id)))
    added = [topic for topic in dict.fromkeys(topics) if topic not in have]
    for topic in added:
        session.add(SubscriberTopic(subscriber_id=subscriber_id, topic=topic, joined_at=now, source=source[:100]))
    session.flush()
    return added


def topics_of(session: Session, subscriber_id: int) -> list[SubscriberTopic]:
    return list(
        session.scalars(
            select(SubscriberTopic)
            .where(SubscriberTopic.subscriber_id == subscriber_id)
            .order_by(SubscriberTopic.topic)
        )
    )


def enrollments_of(session: Session, subscriber_id: int) -> list[Enrollment]:
    return list(
        session.scalars(select(Enrollment).where(Enrollment.subscriber_id == subscriber_id).order_by(Enrollment.id))
    )


def deliveries_of(session: Session, subscriber_id: int) -> list[Delivery]:
    return list(
        session.scalars(select(Delivery).where(Delivery.subscriber_id == subscriber_id).order_by(Delivery.id))
    )


def events_of(session: Session, subscriber_id: int) -> list[Event]:
    return list(session.scalars(select(Event).where(Event.subscriber_id == subscriber_id).order_by(Event.id)))


def delete_subscriber(session: Session, subscriber: Subscriber) -> None:
    """Delete the row; enrollments, deliveries, topics, tags and events go with it (ON DELETE
    CASCADE, db/models.py). A bulk DELETE rather than ``session.delete`` so the ORM does not
    load (and keep in memory) every child row of a person being erased; the object is expunged
    first so the session does not flush stale state for a row that is gone."""
    subscriber_id = subscriber.id
    session.expunge(subscriber)
    session.execute(delete(Subscriber).where(Subscriber.id == subscriber_id))


def checkpoint_sqlite(database_url: str) -> None:
    """After an erase on SQLite, fold the write-ahead log back into the database and truncate
    it: until then the deleted rows' old pages (with the address) still sit in ``-wal``.
    Best effort: a reader holding an old snapshot keeps its frames until the next checkpoint.
    Nothing to do on PostgreSQL (its WAL is the server's, recycled by its own checkpoints)."""
    if not database_url.startswith("sqlite"):
        return
    raw = engine_for(database_url).raw_connection()  # outside any transaction, as the pragma needs
    try:
        raw.driver_connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # type: ignore[union-attr]
    except sqlite3.OperationalError as exc:
        log.warning("WAL checkpoint after an erase did not run: %s", exc)
    finally:
        raw.close()
